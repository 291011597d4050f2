"""IPFH (paper 004, Zhang et al.): coarse hourglass F_c + REINFORCE patch policy, 16² → 128² (×8).

Variants (``--config configs/ipfh.py:<variant>``):

  ""           the three stages in order in one run (stage "all"): coarse, cognition, policy.
  "coarse"     only F_c (+ D), paper: batch 128.
  "cognition"  only SphereFace fine-tuning.
  "policy"     only P + R (batch 64); point config.weights.coarse / .cognition at
               the workdirs of the first two runs to start from them.
  "smoke"      all three stages on 64² faces, tiny networks: minutes on a laptop CPU.
  "ablation"   smoke's networks with the paper's patch counts for Table VII (T = 20,
               grid 16, random 30; 16² patches of 64² keep the paper's 32² / 128²
               ratio), 300 policy steps: ~10-15 min on 2 CPU cores (README, IPFH).
               It keeps the paper's short-term reward: --config.policy.reward=improvement
               did not beat it there (README, IPFH: its arg-max still repeats one patch).

Options follow the variant (hallujax.config_base.parse_variant), e.g.
``smoke,stage=policy`` (one stage of the smoke run: that stage's steps, as the
"coarse" / "cognition" / "policy" variants do for the paper's run) or
``smoke,train.steps=10``.

"all" compiles one train step per stage and picks it from the step number on the
host (no lax.switch on device), so it trains as fast as the three stages run
separately. The stages in order as separate runs, e.g. with a different batch
size per stage (paper: 128 for F_c, 64 for the policy):

  python -m hallujax.train --config configs/ipfh.py:coarse --workdir runs/ipfh_coarse
  python -m hallujax.train --config configs/ipfh.py:cognition --workdir runs/ipfh_cognition
  python -m hallujax.train --config configs/ipfh.py:policy --workdir runs/ipfh_policy \
      --config.weights.coarse=runs/ipfh_coarse --config.weights.cognition=runs/ipfh_cognition

Patch selection for evaluation (paper Table VII) is config.policy.selection:
policy (default), grid (16 patches) or random (30 patches); one checkpoint
evaluates three ways with --config.policy.selection=grid|random.

One optimizer section per trained network (hallujax.optim): F_c and D train
together in the coarse stage, P and R in the policy stage, each with the
stage's rate, decayed exponentially to final_learning_rate over the stage's
steps (decay_steps follows config.stage_steps unless set).
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant

VARIANTS = ("", "coarse", "cognition", "policy", "smoke", "ablation")
STAGES = ("coarse", "cognition", "policy", "all")


def adam_decay(learning_rate: float, final_learning_rate: float, steps) -> ml_collections.ConfigDict:
  """Adam, learning rate decayed exponentially to `final_learning_rate` over `steps` (a reference:
  the stage's steps; `steps * 1` so that setting decay_steps alone does not change the stage)."""
  return ml_collections.ConfigDict(dict(
      name="adam", learning_rate=learning_rate, schedule="exponential",
      final_learning_rate=final_learning_rate, decay_steps=steps * 1))


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

  c.stage = "all"  # coarse | cognition | policy | all (the three in order)
  # The paper gives no step counts; these are ~60 / 30 / 60 epochs of a 100K-image set at the batch sizes below.
  coarse_steps = ml_collections.FieldReference(50_000)
  cognition_steps = ml_collections.FieldReference(20_000)
  policy_steps = ml_collections.FieldReference(100_000)
  c.stage_steps = ml_collections.ConfigDict(dict(
      coarse=coarse_steps, cognition=cognition_steps, policy=policy_steps))
  c.train.steps = coarse_steps + cognition_steps + policy_steps
  c.train.batch_size = 64  # §III-C: 128 for F_c, 64 for the policy stage; "all" uses one batch size.

  c.coarse = ml_collections.ConfigDict(dict(
      # "two stacked hourglass modules"; "encoded the images to 4×4×128".
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
      selection="policy",            # policy | grid | random (Table VII)
      # Short-term reward: "paper" r_s = −L_p of the repaired patch (Eq. 10), or "improvement"
      # r_s = L_p before − after this step's repair (hallujax/methods/ipfh_rollout.py `rollout_step`).
      reward="paper",
      # Not in the paper: the test-time arg-max skips centres inside already repaired patches
      # (hallujax/methods/ipfh_rollout.py `masked_logits`).
      exclude_repaired=False,
      random_patches=30,             # "we randomly chosen 30 patches"
      image_widths=(32, 64, 128, 256),   # image branch: stride-2 residual blocks (128² → 8²)
      patch_widths=(32, 64),
      holistic_features=512, context_features=256,  # §III-C: 512-D and 256-D
  ))
  # Local restoration: 128 + 128 channels fused = "256×32×32".
  c.restoration = ml_collections.ConfigDict(dict(features=128, patch_layers=3, decoder_layers=3))
  # Weights of L_f and L_id in r_l (Eq. 12) and L_im (Eq. 17); the paper sums them unweighted.
  # lr_reference: what D(ŷ) is compared with in the LR-domain terms (Eq. 10, 17): "input"
  # (the paper's x) or "dual_of_target" (D(y); hallujax/methods/ipfh_rollout.py `lr_reference` says why).
  c.loss = ml_collections.ConfigDict(dict(feature=1.0, identity=1.0, lr_reference="input"))
  c.optim = ml_collections.ConfigDict(dict(
      # Paper: coarse "learning rate from 0.1 to 10^-5" with no optimizer named (0.1 suggests SGD
      # with batch norm); our hourglass has no normalization, so Adam from 10^-3 to 10^-5. D trains
      # with F_c in the coarse stage (the paper does not say how; hallujax/methods/ipfh.py).
      coarse=adam_decay(1e-3, 1e-5, coarse_steps),
      dual=adam_decay(1e-3, 1e-5, coarse_steps),
      # SphereFace fine-tuning: the rate is not given in the paper.
      cognition=adam_decay(1e-4, 1e-5, cognition_steps),
      # Policy stage: "Adam optimizer and set the learning rate from 10^-3 to 10^-5", P and R alike.
      policy=adam_decay(1e-3, 1e-5, policy_steps),
      restoration=adam_decay(1e-3, 1e-5, policy_steps),
  ))
  # Workdirs of finished earlier stages (single-stage runs; see hallujax/methods/ipfh.py).
  c.weights.coarse = ""
  c.weights.cognition = ""

  if name in ("smoke", "ablation"):
    c.data.update(input_size=8, target_size=64, num_identities=16, train_size=2048, eval_size=16)
    coarse_steps.set(60)
    cognition_steps.set(30)
    policy_steps.set(60)
    c.train.update(batch_size=8, log_every=10, eval_every=150, eval_batches=2, image_every=150,
                   checkpoint_every=150)
    c.coarse.network = dict(features=16, num_stacks=2, bottom_size=4)
    # Smoke only: the paper's decay to 10^-5 within 60 steps leaves most of them at a rate too
    # small to move; ending at 2·10^-4 doubles the coarse stage's gain over bicubic (+0.7 dB).
    c.optim.coarse.final_learning_rate = 2e-4
    c.optim.dual.final_learning_rate = 2e-4
    c.dual.widths = (8, 16)
    c.cognition.update(depth=4, embedding_dim=64)
    c.optim.cognition.learning_rate = 1e-3
    c.policy.update(steps=4, patch_size=16, random_patches=8, image_widths=(8, 16, 32),
                    patch_widths=(8, 16), holistic_features=32, context_features=16)
    c.restoration.update(features=16, patch_layers=2, decoder_layers=2)
    # Smoke only, like the coarse rate above: a decay to 10^-5 within 60 steps leaves R nearly
    # untrained. And D after 60 coarse steps is far from the degradation (‖D(y) − x‖² ≈ 0.06 >
    # ‖ỹ − y‖² ≈ 0.03), so the paper's ‖D(ŷ) − x‖² pulls R away from y; compare with D(y).
    c.optim.policy.final_learning_rate = 2e-4
    c.optim.restoration.final_learning_rate = 2e-4
    c.loss.lr_reference = "dual_of_target"
    if name == "ablation":
      policy_steps.set(300)
      c.data.update(eval_size=128)   # 16 batches of 8 test faces
      c.train.update(eval_every=390, image_every=390, checkpoint_every=390, eval_batches=16)
      c.policy.update(steps=20, random_patches=30)   # paper: T = 20, 30 random patches
  elif name in ("coarse", "cognition", "policy"):
    options = {"stage": name, **options}

  stage = options.pop("stage", None)
  if stage is not None:
    select_stage(c, stage, paper_sizes=name not in ("smoke", "ablation"))
  return apply_variant_options(c, options)


def select_stage(c: ml_collections.ConfigDict, stage: str, paper_sizes: bool) -> None:
  """Train only `stage` (its config.stage_steps), or "all" three in order."""
  if stage not in STAGES:
    raise ValueError(f"configs/ipfh.py: stage={stage!r}; expected one of {', '.join(STAGES)}.")
  c.stage = stage
  if stage == "all":
    steps = c.stage_steps
    c.train.steps = steps.get_ref("coarse") + steps.get_ref("cognition") + steps.get_ref("policy")
    return
  c.train.steps = c.stage_steps.get_ref(stage)
  for section in c.optim.values():   # a single stage's rates decay over the run's steps
    section.decay_steps = c.train.get_ref("steps") * 1
  if stage == "coarse" and paper_sizes:
    c.train.batch_size = 128   # §III-C: "batch size of 128" for F_c
