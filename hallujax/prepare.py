"""Convert a dataset into compact array_record shards, in parallel and resumably.

    python -m hallujax.prepare --source celeba_folder --data_dir ~/celeba --out_dir ~/celeba_records
    python -m hallujax.prepare --source vggface2_folder --data_dir ~/vggface2 --out_dir ~/vgg_records \\
        --num_hosts 8 --host_index $HOST          # one job per host, each writing its own range of shards
    python -m hallujax.prepare --out_dir ~/celeba_records --verify    # re-read every record

The command's flags; what it writes (shards, plan, manifest, info.json,
unusable.txt), the --encoding choices and how the work is split are described in
hallujax.data.record_writing, which does the work. Exit status: 0 done, 1 verify
found unreadable records, 2 a bad argument or input, 130 interrupted (finished
shards are kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import sys

from hallujax.data import record_writing


def parse(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", default="", help="a name from hallujax.data.sources.SOURCES")
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--splits", default=",".join(record_writing.SPLITS))
  parser.add_argument("--shards", type=int, default=0, help="shards per split (0: from --examples_per_shard)")
  parser.add_argument("--examples_per_shard", type=int, default=8192)
  parser.add_argument("--target_size", type=int, default=0, help="resize images to this size (0: keep)")
  parser.add_argument("--encoding", default="auto", choices=record_writing.ENCODINGS)
  parser.add_argument("--pairing", default="same_view")
  parser.add_argument("--workers", type=int, default=0, help="worker processes (0: every core available)")
  parser.add_argument("--num_hosts", type=int, default=1, help="jobs preparing OUT together, one per host")
  parser.add_argument("--host_index", type=int, default=0, help="this job's index among --num_hosts")
  parser.add_argument("--strict", action="store_true", help="fail on the first unreadable image")
  parser.add_argument("--max_pixels", type=int, default=None,
                      help="leave out images of more pixels, read from the header (default: config.data.max_pixels)")
  parser.add_argument("--verify", action="store_true", help="re-read every record of OUT and list unreadable ones")
  arguments = parser.parse_args(argv)
  if not arguments.verify and not arguments.source:
    parser.error("--source is required (a name from hallujax.data.sources.SOURCES) unless --verify.")
  if arguments.encoding == "jpeg" and arguments.target_size:
    parser.error("--encoding jpeg keeps the original files, which --target_size would resize; use auto or png.")
  return arguments


def _interrupt(signal_number, frame):
  raise KeyboardInterrupt   # a scheduler's SIGTERM (preemption) stops the workers like Ctrl-C does


def main(argv=None):
  import signal
  arguments = parse(argv)
  signal.signal(signal.SIGTERM, _interrupt)
  try:
    if arguments.verify:
      if record_writing.verify(arguments):
        sys.exit(1)
      return
    record_writing.prepare(arguments)
  except (ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print(f"\ninterrupted: finished shards are kept in {arguments.out_dir}; run the same command again to "
          f"resume.", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  main()
