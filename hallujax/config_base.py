"""The fields every method config shares: data, training loop, mesh, logging.

A method config (``configs/<method>.py``) starts from ``base_config()`` and
fills in its paper's fields; every field can be overridden on the command line
(``--config.train.batch_size=64``).
"""

from __future__ import annotations

import ast
import dataclasses

import ml_collections

# The choices of the base's string fields that name a variant (the one place each is checked: cli.check_config).
COMPUTE_DTYPES = ("float32", "bfloat16")   # train.compute_dtype
ON_NONFINITE = ("stop", "skip")            # train.on_nonfinite


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = ""
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      source="faceworld",      # hallujax.data.sources.SOURCES
      pairing="same_view",     # how "input" relates to "target" (see the source's docstring)
      input_size=28,           # "input" is resized to input_size² ...
      input_channels=3,
      target_size=112,         # ... and "target" to target_size².
      downsample="bilinear",   # kernel that makes "input" from its full-size view
      num_identities=1000,     # face world: identities in the world
      train_size=100_000,      # face world: examples per split
      eval_size=512,
      world_seed=0,            # face world: which world (identities and renders follow from it)
      identity_split="shared", # face world: "shared" identities across splits, or "disjoint" (80/10/10 %)
      max_yaw=90.0,            # face world: pose ranges in degrees
      max_pitch=20.0,
      max_roll=12.0,
      yaw_set=(),              # face world: yaws drawn from ± these values (degrees) instead of the range above
      symmetric_frontal=False, # face world: every view lit from straight ahead, background untilted, gaze centred,
                               # so frontal targets are mirror-symmetric (VividGAN's L_sys; faceworld.SYMMETRIC_SCENE)
      plain_background=False,  # face world: one flat grey background behind visible views (faceworld.PLAIN_BACKGROUND)
      uniform_appearance=False,  # face world: one scene, skin, hair, eye and shirt colour for every face: what a
                               # thermal image cannot show (faceworld.UNIFORM_APPEARANCE)
      local_degradation="",    # face world, same_view: "" | "occlusion" | "blur" | "shade" discs at random places of
      local_degradation_count=3,      # the input (faceworld.LocalDegradation): how many discs,
      local_degradation_radius=0.12,  # and their radius as a fraction of the side
      render_on="host",        # face world: "host" renders each example in the input pipeline; "device"
                               # ships only renderer parameters and renders batches on the accelerator
                               # (hallujax.data.device_render), for when the host would starve it
      data_dir="",             # on-disk and TFDS sources read from here
      tfds_name="",            # source "tfds": any TFDS dataset by name
      crop=0,                  # folder sources: centre crop before resizing (0 = the layout's default)
      strict=False,            # folder sources: fail on an unreadable image instead of skipping it
      reject_small=True,       # folder sources: reject images smaller than the crop
      max_pixels=50_000_000,   # folder sources: reject images of more pixels (read from the header, never decoded)
      bit_depth_range=(0, 0),  # folder sources, 16-bit grey images (thermal/NIR): (low, high) raw range mapped
                               # onto 0..255 for the whole dataset; (0, 0) = per-image min-max (logged)
      subject_split=(),        # paired_folder: (train, validation, test) subject counts, e.g. (40, 0, 10) for VIS-TH
      fold=1,                  # casia_nir_vis: which of CASIA NIR-VIS 2.0's 10 protocol folds
      illumination="Strong",   # oulu_casia_nir_vis: which illumination's sequences (Strong, Weak, Dark)
      clients=0,               # federated methods: K clients, each reading its own partition of a split;
                               # batches are then (K, batch_size, ...) (hallujax.data.pipeline)
      client_partition="interleaved",  # "interleaved" | "dirichlet" | "sites" (hallujax.data.pipeline.client_partitions)
      sites=1,                 # institutions (sites) a split is cut into, contiguous blocks of examples; a
                               # client reads one site's data with client_partition="sites" or "dirichlet"
                               # (hallujax.data.partition.site_count; thermal_sensors, when given, set it)
      thermal_sensors=(),      # face world, thermal pairings: one sensor name per site (faceworld_params.
                               # THERMAL_SENSORS); site s's thermal inputs go through sensor s. () = none
      worker_count=-1,         # grain worker processes decoding/degrading (0 = in the main process; -1 = every
                               # core but two, at most 32, on an accelerator host, 0 on a CPU backend)
      worker_buffer_size=2,    # batches each worker keeps ready
      read_threads=4,          # threads reading records inside each worker ...
      read_buffer=4,           # ... and the batches they prefetch
      prefetch=2,              # batches prefetched to the device
      # Random input degradations after downsampling (hallujax.data.pipeline): (low, high) ranges drawn per
      # example from the seed and its global position; (0, 0) switches a kind off.
      degradation=ml_collections.ConfigDict(dict(blur_sigma=(0.0, 0.0), noise_sigma=(0.0, 0.0),
                                                 jpeg_quality=(0, 0))),
  ))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=16,           # global batch, split over the mesh's data axis
      steps=1000,
      log_every=50,            # metrics are fetched from the device only this often
      eval_every=500,
      eval_batches=8,
      image_every=500,         # PNG grids + TensorBoard images
      checkpoint_every=500,
      keep_checkpoints=3,
      compute_dtype="float32", # COMPUTE_DTYPES; "bfloat16": bf16 activations, float32 parameters and loss sums
      on_nonfinite="stop",     # ON_NONFINITE; "skip": keep the previous state for that step and count it
      max_skipped_steps=100,   # with "skip": more non-finite steps than this in a row stop the run
      resume_step=0,           # resume from this checkpoint step (0 = the newest that restores)
      profile_steps=0,         # > 0: a jax.profiler trace of this many steps after warm-up, in <workdir>/profile
      compile_ahead=True,      # compile the named steps the run will reach in a background thread once the
                               # first step's program is compiled (run_setup.StepsCompiledAhead), so a later
                               # phase does not stop the run for its compile; False: each on first use
  ))
  c.mesh = ml_collections.ConfigDict(dict(
      clients=1,               # devices on the clients axis (federated methods; 1 otherwise)
      data=-1,                 # devices on the data axis (-1 = all that remain)
      model=1,                 # devices on the model axis: needs a rule that uses it (hallujax.sharding)
      # Sharding rules for the train state, first match wins: (regex over the parameter path,
      # spec), spec a tuple of mesh axis names / None per dimension, or "fsdp" (split the largest
      # evenly divisible dimension over `data`), or "replicated". Unmatched leaves are replicated.
      rules=(),
      fsdp=False,              # shorthand for the rule (".*", "fsdp") after the others (ZeRO-3 style)
      fsdp_min_size=2**18,     # "fsdp" leaves with fewer elements stay replicated
  ))
  c.weights = ml_collections.ConfigDict()  # name -> local path of pretrained weights
  return c


def parse_variant(argument: str, known: tuple[str, ...], config_file: str) -> tuple[str, dict]:
  """The one variant grammar of every config: ``name`` or ``name,key=value,...``.

  ``configs/ipfh.py:smoke,stage=policy`` -> ("smoke", {"stage": "policy"}). The
  name must be one of `known` ("" is the paper's run); keys are dotted config
  paths applied by :func:`apply_variant_options` after the variant is built.
  """
  name, *pairs = [part.strip() for part in (argument or "").split(",")]
  if name not in known:
    shown = ", ".join(repr(k) if k == "" else k for k in known)
    raise ValueError(f"Unknown variant {name!r} of {config_file}; known: {shown} "
                     f"(optionally followed by ,key=value,...).")
  options = {}
  for pair in pairs:
    key, equals, value = pair.partition("=")
    if not equals or not key:
      raise ValueError(f"Variant option {pair!r} of {config_file} is not key=value "
                       f"(e.g. {config_file}:{name or 'smoke'},train.steps=10).")
    options[key.strip()] = value.strip()
  return name, options


def apply_variant_options(config: ml_collections.ConfigDict, options: dict) -> ml_collections.ConfigDict:
  """Sets each dotted `key` of `options` to its value (a Python literal, else the string)."""
  for key, text in options.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node:
        raise ValueError(f"Variant option {key!r}: the config has no field {part!r}.")
      node = node[part]
    if leaf not in node:
      raise ValueError(f"Variant option {key!r}: the config has no field {leaf!r}; "
                       f"fields there: {', '.join(sorted(node.keys()))}.")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    node[leaf] = value
  return config


# Methods declared by another method's config file: method -> (configs/<file>.py, get_config's argument).
CONFIG_OF_METHOD = {"pix2pix": ("pcfh", ",ablation=pix2pix"), "cyclegan": ("pcfh", ",ablation=cyclegan")}


def declared_config(method: str) -> ml_collections.ConfigDict:
  """Every field a run of `method` has today, each with its declared default: the paper config of
  ``configs/<method>.py`` (CONFIG_OF_METHOD names the others) when this checkout has it, else ``base_config()``."""
  import importlib
  import pathlib
  import sys
  name, argument = CONFIG_OF_METHOD.get(method, (method, ""))
  root = pathlib.Path(__file__).resolve().parents[1]
  if not (name and name.isidentifier() and (root / "configs" / f"{name}.py").is_file()):
    return base_config()
  if str(root) not in sys.path:
    sys.path.append(str(root))   # config files import each other as `configs.<name>`
  return fill_missing(importlib.import_module(f"configs.{name}").get_config(argument), base_config())


def fill_missing(config, declared) -> ml_collections.ConfigDict:
  """Adds to `config` (in place) every field of `declared` it lacks, with the declared value, recursively.

  A run's config.json holds the fields of its day; a field declared since reads as its declared default
  (``run_files.read_run_config`` calls this), so no reader restates a default for old runs."""
  for name, value in declared.items():
    if name not in config:
      config[name] = value
    elif (isinstance(value, ml_collections.ConfigDict) and isinstance(config[name], ml_collections.ConfigDict)
          and not is_optimizer_section(value)):
      fill_missing(config[name], value)
  return config


def is_optimizer_section(section) -> bool:
  """An optimizer's section (it has a learning rate). Its omitted fields mean optim.DEFAULTS, not the declared
  config's: filling a run's Adam section from a paper config's SGD section (momentum, boundaries, ...) would
  build another optimizer than the one whose state the checkpoint holds."""
  return "learning_rate" in section


def data_section(**fields) -> ml_collections.ConfigDict:
  """``config.data`` as :func:`base_config` declares it, with `fields` set (tests and tools that read a source
  without a whole config)."""
  section = base_config().data
  section.update(fields)
  return section


# Methods that were variants of another before they became methods of their own: (old method, field, value)
# -> new method. PCFH's baselines were `model.kind` of method "pcfh" until they became methods.
RENAMED_METHODS = {("pcfh", "kind", "pix2pix"): "pix2pix", ("pcfh", "kind", "cyclegan"): "cyclegan"}


def saved_run_config(saved: dict) -> ml_collections.ConfigDict:
  """A run's saved config.json as today's config: a method that has since become one of its own renamed
  (RENAMED_METHODS), and every field declared since filled with its declared default (fill_missing)."""
  config = ml_collections.ConfigDict(saved)
  model = saved.get("model")
  for (method, field, value), renamed in RENAMED_METHODS.items():
    if saved.get("method") == method and isinstance(model, dict) and model.get(field) == value:
      config.method = renamed
  return fill_missing(config, declared_config(str(config.get("method") or "")))


def read_section(record_type, section):
  """A frozen dataclass of `record_type` from the config `section`'s fields of the same names (a loss section read
  once into typed weights, e.g. a method's LossWeights); a missing field is the config's KeyError."""
  return record_type(**{field.name: section[field.name] for field in dataclasses.fields(record_type)})
