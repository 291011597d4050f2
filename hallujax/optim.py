"""One optimizer section per trained network, built one way: ``config.optim.<network>``.

A section is a dict such as::

    dict(name="adam", learning_rate=1e-3, b1=0.9, b2=0.999,
         schedule="exponential", final_learning_rate=1e-5, decay_steps=56_000,
         boundaries=(56_000,), rates=(1e-4,))

``name``           adam | adamw | sgd
``learning_rate``  the starting rate
``schedule``       constant (default) | exponential (to ``final_learning_rate`` over
                   ``decay_steps``, then held) | cosine (to ``final_learning_rate``
                   over ``decay_steps``)
``boundaries`` / ``rates``
                   after the optimizer's i-th boundary update the rate is ``rates[i]``
                   (a paper's "÷10 at epoch 15" or "1e-4 for the joint phase"); a
                   single boundary and rate may be plain numbers
``warmup_steps``   linear warm-up from 0 (default 0)
``b1``, ``b2``, ``eps``        Adam's
``momentum``, ``nesterov``     SGD's
``weight_decay``   decoupled for adamw; L2 added to the gradient for adam and sgd
``clip_norm``      global gradient-norm clipping (default off)

The schedule counts this optimizer's own updates, so a network that starts
training in a later phase starts its schedule then.
"""

from __future__ import annotations

from typing import Any

import optax

# What a section that leaves a field out means by it (the module docstring says what each field does).
DEFAULTS = {"name": "adam", "learning_rate": None, "schedule": "constant", "final_learning_rate": None,
            "decay_steps": None, "boundaries": None, "rates": None, "warmup_steps": 0, "b1": 0.9, "b2": 0.999,
            "eps": 1e-8, "momentum": None, "nesterov": False, "weight_decay": 0.0, "clip_norm": None}
KNOWN_FIELDS = frozenset(DEFAULTS)
NAMES = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "exponential", "cosine")


def field(section, key: str):
  """`section`'s `key` (a dict or ConfigDict section), or DEFAULTS[key] when the section leaves it out."""
  return section.get(key, DEFAULTS[key]) if hasattr(section, "get") else getattr(section, key, DEFAULTS[key])


def learning_rate_schedule(section, where: str = "config.optim") -> optax.Schedule:
  """The section's learning rate as a function of this optimizer's update count."""
  rate = float(field(section, "learning_rate"))
  kind = field(section, "schedule")
  if kind == "constant":
    base = optax.constant_schedule(rate)
  elif kind in ("exponential", "cosine"):
    final, steps = field(section, "final_learning_rate"), field(section, "decay_steps")
    if final is None or not steps or steps <= 0:
      raise ValueError(f"{where}.schedule={kind!r} needs final_learning_rate and decay_steps > 0 "
                       f"(got {final!r}, {steps!r}).")
    base = (optax.exponential_decay(rate, int(steps), float(final) / rate, end_value=float(final))
            if kind == "exponential" else optax.cosine_decay_schedule(rate, int(steps), float(final) / rate))
  else:
    raise ValueError(f"{where}.schedule={kind!r} is not known; expected one of {', '.join(SCHEDULES)}.")
  boundaries, values = field(section, "boundaries") or (), field(section, "rates") or ()
  # One boundary may be a plain number, so configs can tie it to a phase length (FieldReference).
  boundaries = tuple(int(b) for b in ((boundaries,) if isinstance(boundaries, (int, float)) else boundaries))
  values = tuple(float(v) for v in ((values,) if isinstance(values, (int, float)) else values))
  if len(boundaries) != len(values):
    raise ValueError(f"{where}: {len(boundaries)} boundaries need as many rates, got {len(values)}.")
  if list(boundaries) != sorted(boundaries):
    raise ValueError(f"{where}.boundaries={boundaries} must increase.")
  if boundaries:
    base = optax.join_schedules([base, *(optax.constant_schedule(v) for v in values)], list(boundaries))
  warmup = int(field(section, "warmup_steps") or 0)
  if warmup > 0:
    base = optax.join_schedules([optax.linear_schedule(0.0, rate, warmup), base], [warmup])
  return base


def make(section, where: str = "config.optim") -> optax.GradientTransformation:
  """The optax optimizer a section describes (see the module docstring)."""
  keys = set(section.keys()) if hasattr(section, "keys") else set()
  unknown = keys - KNOWN_FIELDS
  if unknown:
    raise ValueError(f"{where} has unknown fields {sorted(unknown)}; known: {', '.join(sorted(KNOWN_FIELDS))}.")
  name = field(section, "name")
  if name not in NAMES:
    raise ValueError(f"{where}.name={name!r} is not a known optimizer; expected one of {', '.join(NAMES)}.")
  if field(section, "learning_rate") is None:
    raise ValueError(f"{where} gives no learning_rate.")
  rate = learning_rate_schedule(section, where)
  weight_decay = float(field(section, "weight_decay") or 0.0)
  parts = []
  clip = field(section, "clip_norm")
  if clip:
    parts.append(optax.clip_by_global_norm(float(clip)))
  if name == "adamw":
    parts.append(optax.adamw(rate, b1=field(section, "b1"), b2=field(section, "b2"),
                             eps=field(section, "eps"), weight_decay=weight_decay))
  else:
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
    if name == "adam":
      parts.append(optax.adam(rate, b1=field(section, "b1"), b2=field(section, "b2"),
                              eps=field(section, "eps")))
    else:
      parts.append(optax.sgd(rate, momentum=field(section, "momentum") or None,
                             nesterov=bool(field(section, "nesterov"))))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)


def make_all(optim_config, names) -> dict[str, optax.GradientTransformation]:
  """`{name: make(config.optim.<name>)}` for the trained networks `names`, each checked to exist."""
  missing = [n for n in names if n not in optim_config]
  if missing:
    raise ValueError(f"config.optim has no section for {', '.join(missing)}; it has "
                     f"{', '.join(sorted(optim_config)) or 'none'}.")
  return {n: make(optim_config[n], f"config.optim.{n}") for n in names}


def apply_update(optimizer: optax.GradientTransformation, params: Any, opt_state: Any,
                 gradients: Any) -> tuple[Any, Any]:
  """One optax update of one network: (new parameters, new optimizer state)."""
  updates, opt_state = optimizer.update(gradients, opt_state, params)
  return optax.apply_updates(params, updates), opt_state
