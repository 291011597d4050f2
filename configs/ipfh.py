"""IPFH (paper 004, Zhang et al.): coarse hourglass F_c + REINFORCE patch policy, 16² → 128² (×8).

Variants (``--config configs/ipfh.py:<variant>``):

  ""             the four stages in order in one run (stage "all"): coarse, cognition,
                 restoration (R pretrained on random patch pairs), policy.
  "coarse"       only F_c (+ D), paper: batch 128.
  "cognition"    only SphereFace fine-tuning.
  "restoration"  only R's pretraining on random patch pairs (point config.weights.coarse /
                 .cognition at the first two runs).
  "policy"       only P + R (batch 64); config.weights.coarse / .cognition / .restoration
                 name the workdirs of the earlier runs.
  "smoke"        all four stages on 64² faces from 8², tiny networks: minutes on a laptop CPU.
  "ablation"     smoke's networks with the paper's patch counts (T = 20, grid 16, random 30;
                 16² patches of 64² keep the paper's 32² / 128² ratio), 300 policy steps.
  "table7"       Table VII at CPU scale (configs/tables/ipfh_table7.py): 64² faces from 16²
                 (×4), tiny networks, the paper's counts (T = 20 patches of 16², grid 16, random
                 30), every stage in one run of ≤ 3 minutes on this 2-core CPU; one run per
                 config.policy.selection (policy | grid | random | oracle).
  "table7_local" table7 with local degradations of the input and a wider, longer-pretrained R, so
                 that where patches go matters (not in the paper; `table7_local` says what it measured).
  "table7_alive" table7_local with an R that improves the patches it is given, first and again: R
                 pretrained 1,000 steps, also on states holding its own repairs, reading which pixels
                 it repaired (not in the paper; `table7_alive` says what it measured).
  "table7_occlusion" table7_alive with the discs occluded (a flat colour) instead of shaded: R helps where
                 the face is hidden and not elsewhere, so where patches go matters (not in the paper;
                 `table7_occlusion` says what it measured). Table VII's setting.

Options follow the variant (hallujax.config_base.parse_variant), e.g.
``smoke,stage=policy`` (one stage of the smoke run) or
``table7,policy.selection=grid`` or ``smoke,train.steps=10``.

"all" compiles one train step per stage and picks it from the step number on the
host (no lax.switch on device). The stages as separate runs, e.g. with a
different batch size per stage (paper: 128 for F_c, 64 for the policy):

  python -m hallujax.train --config configs/ipfh.py:coarse --workdir runs/ipfh_coarse
  python -m hallujax.train --config configs/ipfh.py:cognition --workdir runs/ipfh_cognition
  python -m hallujax.train --config configs/ipfh.py:restoration --workdir runs/ipfh_restoration \
      --config.weights.coarse=runs/ipfh_coarse --config.weights.cognition=runs/ipfh_cognition
  python -m hallujax.train --config configs/ipfh.py:policy --workdir runs/ipfh_policy \
      --config.weights.coarse=runs/ipfh_coarse --config.weights.cognition=runs/ipfh_cognition \
      --config.weights.restoration=runs/ipfh_restoration

Patch selection (paper Table VII) is config.policy.selection, used in training
AND evaluation, so each strategy is its own trained model ("At the training
stage, we refined the patches with ..."): policy (default), grid (16 patches),
random (30 patches) or oracle (not in the paper: greedy by the ground truth's
gain from R, an upper bound).

One optimizer section per trained network (hallujax.optim): F_c and D train
together in the coarse stage, R in the restoration and policy stages, P in the
policy stage, each decayed exponentially to final_learning_rate over its own
updates (R: its pretraining steps, then T + 1 updates per policy step with the
paper's per-step updates).
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant

# Table VII's variants, each the one before it plus its own change (the functions of the same names).
TABLE7_VARIANTS = ("table7", "table7_local", "table7_alive", "table7_occlusion")
VARIANTS = ("", "coarse", "cognition", "restoration", "policy", "smoke", "ablation", *TABLE7_VARIANTS)
STAGES = ("coarse", "cognition", "restoration", "policy", "all")
SMALL = ("smoke", "ablation", *TABLE7_VARIANTS)


def adam_decay(learning_rate: float, final_learning_rate: float, steps) -> ml_collections.ConfigDict:
  """Adam, learning rate decayed exponentially to `final_learning_rate` over `steps` (a reference:
  the stage's steps; `steps * 1` so that setting decay_steps alone does not change the stage)."""
  return ml_collections.ConfigDict(dict(
      name="adam", learning_rate=learning_rate, schedule="exponential",
      final_learning_rate=final_learning_rate, decay_steps=steps * 1))


def restoration_updates(c: ml_collections.ConfigDict, pretraining, policy):
  """R's optimizer updates: one per pretraining step, then T + 1 per policy step ("step":
  one after each of the T steps and one with L_im) or 1 ("batch"). A reference, so options
  that change T or the step counts change it; grid / random rollouts have 16 / 30 steps, so
  their R decays per update at the same rate but per batch slightly faster / slower."""
  per_policy_step = c.policy.get_ref("steps") + 1
  return pretraining + policy * per_policy_step


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if "+" in variant:
    raise ValueError(f"configs/ipfh.py:{variant}: variants no longer combine with '+'; give the stage "
                     f"as an option, e.g. configs/ipfh.py:smoke,stage=policy.")
  name, options = parse_variant(variant, VARIANTS, "configs/ipfh.py")
  c = base_config()
  c.method = "ipfh"
  # §III-C "Preprocessing": 128² aligned faces, "downsampled HR ground-truth images by a
  # factor of 8 to 16×16" (the kernel is not named; bicubic, the common choice).
  c.data.update(source="faceworld", pairing="same_view", input_size=16, target_size=128,
                downsample="bicubic")

  c.stage = "all"  # coarse | cognition | restoration | policy | all (the four in order)
  # The paper gives no step counts; these are ~60 / 30 / - / 60 epochs of a 100K-image set at the batch sizes below.
  coarse_steps = ml_collections.FieldReference(50_000)
  cognition_steps = ml_collections.FieldReference(20_000)
  restoration_steps = ml_collections.FieldReference(10_000)
  policy_steps = ml_collections.FieldReference(100_000)
  c.stage_steps = ml_collections.ConfigDict(dict(
      coarse=coarse_steps, cognition=cognition_steps, restoration=restoration_steps, policy=policy_steps))
  c.train.steps = coarse_steps + cognition_steps + restoration_steps + policy_steps
  c.train.batch_size = 64  # §III-C: 128 for F_c, 64 for the policy stage; "all" uses one batch size.

  c.coarse = ml_collections.ConfigDict(dict(
      # "two stacked hourglass modules"; "encoded the images to 4×4×128". (Table VI's "coarse
      # visual network with 10 layers" cannot be two hourglasses from 128² to 4²; we follow the text.)
      network=dict(features=128, num_stacks=2, bottom_size=4),
  ))
  c.dual = ml_collections.ConfigDict(dict(widths=(64, 128)))  # Fig. 6: k3s2n64, k3s2n128, k3s2 → 3
  c.cognition = ml_collections.ConfigDict(dict(
      depth=20, embedding_dim=512,   # SphereFace-20 [35]
      margin=1.5,                    # Eq. 14: "we set m = 1.5 here"
      texture_stages=1,              # φ for L_tex: SphereFace's first stage (64 channels)
  ))
  c.policy = ml_collections.ConfigDict(dict(
      steps=20,                      # T = 20
      patch_size=32,                 # "we set patch size of 32×32"
      # policy | grid | random (Table VII) | oracle (not in the paper: greedy by the true gain
      # from R, an upper bound). Used in training AND evaluation: one model per strategy.
      selection="policy",
      # Short-term reward: "paper" r_s = −L_p of the repaired patch (Eq. 10), or "improvement"
      # r_s = L_p before − after this step's repair (hallujax/methods/ipfh_rollout.py `rollout_step`).
      reward="paper",
      random_patches=30,             # "we randomly chosen 30 patches"
      oracle_stride=0,               # oracle candidates every this many pixels (0: patch_size / 2)
      image_widths=(32, 64, 128, 256),   # image branch: stride-2 residual blocks (128² → 8²)
      patch_widths=(32, 64),
      holistic_features=512, context_features=256,  # §III-C: 512-D and 256-D
      # Options to make the policy learnable; none is in the paper, all off by default
      # (docs/ipfh.md has what each measured):
      exclude_repaired=False,        # test-time arg-max skips centres inside repaired patches
      mask_repaired_in_training=False,   # ... and so does sampling in training (and then the test)
      action_stride=1,               # 1: every pixel is an action ("a W×H-D vector"); s: (W/s)(H/s) cells
      action_history=False,          # the context's action vector marks every repaired cell, not only a_{t-1}
      head="dense",                  # "dense": the paper's fully connected layer; "conv": a score map
      entropy_bonus=0.0,             # β: the policy loss subtracts β·H(π)
      baseline="leave_one_out",      # or "value": a learned V(s_t) (value head), weighted value_weight
      value_weight=0.5,
      normalize_advantages=False,    # advantages scaled to zero mean, unit std per batch
      normalize_per_step=False,      # ... separately for each step t (r_s and r_l differ ~100× in scale)
      discount=1.0,                  # γ of the returns; 1: the paper's Σ_t r_t (Eq. 9), 0: each step's own reward
  ))
  # Local restoration: 128 + 128 channels fused = "256×32×32".
  c.restoration = ml_collections.ConfigDict(dict(
      features=128, patch_layers=3, decoder_layers=3,
      # "At each t-step, we update the local restoration network parameters with patch-level
      # loss Lp ... After T-step, we add the image-level loss Lim": "step". "batch":
      # one update per batch with Σ_t L_p + L_im (the former default).
      update_every="step",
      pretrain_patches=4,            # random patch pairs per face per pretraining step
      # Not in the paper (0: its pairs, cut from ỹ): n > 0 cuts each pair from ỹ or from ỹ after k ≤ n of R's
      # own repairs at random places (k uniform), the states R meets after the first step of a rollout; pretrained
      # on ỹ alone R overshoots on a patch it already repaired (docs/ipfh.md "R alive").
      pretrain_repairs=0,
      # Not in the paper (its R reads the image and the patch): True adds a fourth input channel marking the
      # patch's pixels repaired at earlier steps, so R can learn to repair fresh pixels and leave its own repairs
      # (with pretrain_repairs, which shows it such patches).
      sees_repaired=False,
      # §III-C: "We first pre-trained this network on randomly selected patch pairs and fine-tuned it
      # during hallucinator optimization procedure": True. False (not in the paper): R stays as pretrained
      # in the policy stage (only P trains; a fixed selection trains nothing), e.g. for an oracle row that
      # measures the pretrained R's headroom without R training on the oracle's own picks (docs/ipfh.md, issue 28).
      fine_tune=True,
  ))
  # Weights of L_f and L_id in r_l (Eq. 12) and L_im (Eq. 17); the paper sums them unweighted.
  # lr_reference: what the generated LR is compared with in the LR-domain terms (Eq. 10, 17): "input"
  # (the paper's x) or "dual_of_target" (D(y); hallujax/methods/ipfh_rollout.py `lr_reference` says why).
  # image_lr: the whole image's LR version in Eq. 17, "bilinear" ("we first resize the 128 × 128 HR
  # face into 32× 32 with bilinear interpolation") at image_lr_size, or "dual" (D, as the patches).
  c.loss = ml_collections.ConfigDict(dict(feature=1.0, identity=1.0, lr_reference="input",
                                          image_lr="bilinear", image_lr_size=32))
  c.optim = ml_collections.ConfigDict(dict(
      # Paper: coarse "learning rate from 0.1 to 10^-5" with no optimizer named (0.1 suggests SGD
      # with batch norm); our hourglass has no normalization, so Adam from 10^-3 to 10^-5. D trains
      # with F_c in the coarse stage (the paper does not say how; hallujax/methods/ipfh.py).
      coarse=adam_decay(1e-3, 1e-5, coarse_steps),
      dual=adam_decay(1e-3, 1e-5, coarse_steps),
      # SphereFace fine-tuning: the rate is not given in the paper.
      cognition=adam_decay(1e-4, 1e-5, cognition_steps),
      # Policy stage: "Adam optimizer and set the learning rate from 10^-3 to 10^-5", P and R alike
      # (R's schedule runs over its pretraining and its per-step updates, `restoration_updates`).
      policy=adam_decay(1e-3, 1e-5, policy_steps),
      restoration=adam_decay(1e-3, 1e-5, 1),
  ))
  c.optim.restoration.decay_steps = restoration_updates(c, restoration_steps, policy_steps)
  # Workdirs of finished earlier stages (single-stage runs; see hallujax/methods/ipfh.py).
  c.weights.coarse = ""
  c.weights.cognition = ""
  c.weights.restoration = ""

  if name in SMALL:
    c.data.update(input_size=8, target_size=64, num_identities=16, train_size=2048, eval_size=16)
    coarse_steps.set(60)
    cognition_steps.set(30)
    restoration_steps.set(30)
    policy_steps.set(60)
    c.train.update(batch_size=8, log_every=10, eval_every=180, eval_batches=2, image_every=180,
                   checkpoint_every=180)
    c.coarse.network = dict(features=16, num_stacks=2, bottom_size=4)
    # Small runs only: the paper's decay to 10^-5 within 60 steps leaves most of them at a rate too
    # small to move; ending at 2·10^-4 doubles the coarse stage's gain over bicubic (+0.7 dB).
    c.optim.coarse.final_learning_rate = 2e-4
    c.optim.dual.final_learning_rate = 2e-4
    c.dual.widths = (8, 16)
    c.cognition.update(depth=4, embedding_dim=64)
    c.optim.cognition.learning_rate = 1e-3
    c.policy.update(steps=4, patch_size=16, random_patches=8, image_widths=(8, 16, 32),
                    patch_widths=(8, 16), holistic_features=32, context_features=16)
    c.restoration.update(features=16, patch_layers=2, decoder_layers=2)
    # Like the coarse rate above: a decay to 10^-5 within 60 steps leaves R nearly
    # untrained. And D after 60 coarse steps is far from the degradation (‖D(y) − x‖² ≈ 0.06 >
    # ‖ỹ − y‖² ≈ 0.03), so the paper's ‖D(ŷ) − x‖² pulls R away from y; compare with D(y).
    c.optim.policy.final_learning_rate = 2e-4
    c.optim.restoration.final_learning_rate = 2e-4
    c.loss.lr_reference = "dual_of_target"
    c.loss.image_lr_size = 16   # 128 → 32 in the paper: a quarter of the side
    if name == "ablation":
      policy_steps.set(300)
      c.data.update(eval_size=128)   # 16 batches of 8 test faces
      c.train.update(eval_every=510, image_every=510, checkpoint_every=510, eval_batches=16)
      c.policy.update(steps=20, random_patches=30)   # paper: T = 20, 30 random patches
    if name in TABLE7_VARIANTS:
      layers = TABLE7_VARIANTS[:TABLE7_VARIANTS.index(name) + 1]   # the named variant and those it builds on
      table7(c, coarse_steps, cognition_steps, restoration_steps, policy_steps)
      if "table7_local" in layers:
        table7_local(c, restoration_steps)
      if "table7_alive" in layers:
        table7_alive(c, restoration_steps)
      if "table7_occlusion" in layers:
        table7_occlusion(c)
  elif name in ("coarse", "cognition", "restoration", "policy"):
    options = {"stage": name, **options}

  stage = options.pop("stage", None)
  if stage is not None:
    select_stage(c, stage, paper_sizes=name not in SMALL)
  return apply_variant_options(c, options)


def table7(c, coarse_steps, cognition_steps, restoration_steps, policy_steps) -> None:
  """Table VII at CPU scale: 64² from 16² (×4), T = 20 patches of 16² (the paper's 32²/128²), grid 16,
  random 30, every stage in one run of ≤ 3 minutes on 2 CPU cores (docs/ipfh.md has the timings).

  Step counts (measured, docs/ipfh.md): the coarse stage ends well above bicubic; the cognition
  stage ends at 0.57 ± 0.06 held-out identification on the 16 identities (eval identity_accuracy,
  3 seeds; chance 0.06), not the ≥ 90 % once intended: that needs a longer stage than this budget;
  R's pretraining ends with a patch MSE below ỹ's.
  """
  c.data.update(input_size=16, target_size=64, num_identities=16, train_size=4096, eval_size=64)
  c.dual.widths = (8,)              # ×4: two stride-2 convolutions
  c.loss.image_lr_size = 16         # 64² → 16² (the paper's 128² → 32²): the LR input's size here
  coarse_steps.set(100)
  cognition_steps.set(160)
  restoration_steps.set(80)
  policy_steps.set(40)
  total = c.train.get_ref("steps")
  c.train.update(batch_size=8, log_every=20, eval_batches=4)
  for field in ("eval_every", "image_every", "checkpoint_every"):   # once, at the end
    c.train[field] = total * 1
  c.policy.update(steps=20, random_patches=30)   # paper: T = 20, 30 random patches, grid 16


def table7_local(c, restoration_steps) -> None:
  """table7 with headroom for patch selection (not in the paper; docs/ipfh.md, "Headroom"): the face world
  darkens 6 discs (radius 0.08 of the side) at random places of each input ("shade", the content
  survives), and R is wider (64 channels a branch) and pretrained 300 steps. Measured on one seed, 64
  test faces (python -m hallujax.tools.ipfh_benchmark --headroom): oracle − ỹ +0.79 dB, oracle − grid
  +0.51 dB (3 discs of radius 0.12: +0.50 / +0.30; table7 itself: +0.14 / +0.15). The paper's policy
  settings do not learn here (held-out entropy 0.998 of uniform); issue #28's recipe does (one seed: 0.83,
  20 distinct patches, +0.53 dB over random): configs/tables/ipfh_table7.py LEARNABLE, docs/ipfh.md."""
  c.data.update(local_degradation="shade", local_degradation_count=6, local_degradation_radius=0.08)
  c.restoration.features = 64
  restoration_steps.set(300)


def table7_alive(c, restoration_steps) -> None:
  """table7_local with R alive (issue 28; not in the paper; docs/ipfh.md "R alive"). On table7_local R improved
  a random patch of ỹ by +0.22 dB on average (R pretrained 300 steps) and lowered it by −0.51 dB when it
  repaired the patch again, so 30 random patches fell under ỹ (−0.52 dB) and the rows sat at ỹ's level.
  Here R is pretrained 1,000 steps (§III-C "pre-trained on randomly selected patch pairs"; the count is ours),
  on pairs cut from ỹ or from ỹ after up to 4 of its own repairs at random places (`pretrain_repairs`), and
  reads which of the patch's pixels were repaired before (`sees_repaired`). Measured on seed 0's prefix, 64
  test faces: a random patch +0.63 dB, a second repair of it −0.005 dB; grid − ỹ +0.72, random − ỹ +0.61,
  oracle − ỹ +1.00, but oracle − grid only +0.28 dB (the grid already repairs every pixel once), under Table
  VII's 0.5, so the table does not use this variant. After 40 policy steps of the paper's fine-tuning R stays
  alive: the grid row's grid − ỹ +0.57, the random row's random − ỹ +0.56, each with its own R."""
  restoration_steps.set(1000)
  c.restoration.update(pretrain_repairs=4, sees_repaired=True)


def table7_occlusion(c) -> None:
  """table7_alive with the 6 discs of each input occluded by a flat random colour instead of shaded (not in the
  paper; docs/ipfh.md "Room for choosing where"). The paper's policy "adaptively selects a certain facial patch
  while local restoration aims to enhance this facial patch information" (Fig. 1); on the face world every patch of ỹ
  is about equally wrong, and with shaded discs R (table7_alive) improved every patch, so the grid, which repairs
  each pixel once, got most of what choosing could (oracle − grid +0.28 dB). An occluded disc hides the face
  under it: R gains there and loses a little on patches with nothing hidden, so a selection that finds the discs
  beats one that repairs everywhere. Measured on the no-policy prefix, 64 test faces (docs/ipfh.md has the
  commands and the candidates that failed: blur, and the shaded discs): grid − ỹ +0.44 / +1.02, random − ỹ
  +0.40 / +0.82, oracle − ỹ +0.99 / +1.65, oracle − grid +0.55 / +0.64 dB at seeds 0 / 1."""
  c.data.local_degradation = "occlusion"


def select_stage(c: ml_collections.ConfigDict, stage: str, paper_sizes: bool) -> None:
  """Train only `stage` (its config.stage_steps), or "all" four in order."""
  if stage not in STAGES:
    raise ValueError(f"configs/ipfh.py: stage={stage!r}; expected one of {', '.join(STAGES)}.")
  c.stage = stage
  steps = c.stage_steps
  if stage == "all":
    c.train.steps = (steps.get_ref("coarse") + steps.get_ref("cognition") + steps.get_ref("restoration")
                     + steps.get_ref("policy"))
    return
  c.train.steps = steps.get_ref(stage)
  for section in c.optim.values():   # a single stage's rates decay over the run's steps
    section.decay_steps = c.train.get_ref("steps") * 1
  if stage == "policy":
    c.optim.restoration.decay_steps = restoration_updates(c, 0, c.train.get_ref("steps"))
  if stage == "coarse" and paper_sizes:
    c.train.batch_size = 128   # §III-C: "batch size of 128" for F_c
