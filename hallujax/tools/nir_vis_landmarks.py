"""Detect 68 landmarks once for a NIR-VIS database and cache them in its root (landmarks.json).

    python -m hallujax.tools.nir_vis_landmarks --data_dir NIR-VIS-2.0 [--workers 8]
    python -m hallujax.tools.nir_vis_landmarks --data_dir BUAA-VisNir --layout buaa
    python -m hallujax.tools.nir_vis_landmarks --data_dir OriginalImg --layout oulu [--illumination Strong]

The layouts, the protocols and the cache are hallujax.data.nir_vis's (its docstring).
"""

from __future__ import annotations

import argparse
import os

from hallujax.data.nir_vis import CACHE_NAME, LAYOUTS, build_cache, protocol_folds


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Detect 68 landmarks once for a NIR-VIS database (landmarks.json).")
  parser.add_argument("--data_dir", required=True, help="The database's root (module docstring: the layouts).")
  parser.add_argument("--layout", default="casia", choices=LAYOUTS,
                      help="casia: CASIA NIR-VIS 2.0 (s1..s4/ and protocols/); buaa: BUAA-VisNir (NIR/, VIS/); "
                           "oulu: Oulu-CASIA NIR-VIS (OriginalImg/: NI/, VL/).")
  parser.add_argument("--illumination", default="Strong", help="oulu: which illumination's sequences.")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Detection processes.")
  arguments = parser.parse_args(argv)
  try:
    if arguments.layout == "casia":
      protocol_folds(arguments.data_dir)   # the layout is checked before any detection starts
    cache = build_cache(arguments.data_dir, arguments.workers, layout=arguments.layout,
                        illumination=arguments.illumination)
  except (FileNotFoundError, ValueError) as error:
    parser.exit(2, f"error: {error}\n")
  print(f"{os.path.join(arguments.data_dir, CACHE_NAME)}: {len(cache)} images, "
        f"{sum(v is None for v in cache.values())} without a face.")


if __name__ == "__main__":
  main()
