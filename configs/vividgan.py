"""VividGAN (paper 002, Zhang et al.): 16² non-frontal LR -> 128² frontal HR (×8), coarse to fine.

Variants: "" (the paper's run), "smoke" (8² -> 64², small networks, minutes on a laptop CPU),
"tiny" (8² -> 32², ×4, the results tables' budget: about a minute a run) and "fig8" (tiny with a
500-step stage (iii), Fig. 8's budget), each followed by options ``,key=value``:

  model.prior=estimated      VividGAN (default): touching-up U-Nets make the component prior
  model.prior=none           V-TN (§IV-A): no touching-up subnetwork, no prior
  model.prior=ground_truth   V+GT (§IV-A): the target's components are the prior
  loss.terms=mse_h | identity | symmetry | coarse_adversarial | full
                             Table III's rows L⁻_G (L_mse, L_h), L†_G (+L_id), L‡_G (+L_sys),
                             L⋆_G (+L^c_adv), L_G (+L^f_adv, the default)

e.g. ``--config configs/vividgan.py:smoke,model.prior=none,loss.terms=symmetry``. Give the prior
as a variant option rather than ``--config.model.prior``: with no touching-up there is no stage
(ii), and only the variant option shortens ``train.steps`` by its length.

  python -m hallujax.train --config configs/vividgan.py:smoke --workdir /tmp/vividgan_smoke
  python -m hallujax.evaluate --config configs/vividgan.py:smoke --workdir /tmp/vividgan_smoke
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant
from hallujax.data import faceworld_params


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, options = parse_variant(variant, ("", "smoke", "tiny", "fig8"), "configs/vividgan.py")
  c = base_config()
  c.method = "vividgan"
  # §V-A: "unaligned non-frontal LR faces (16×16 pixels)" -> "frontal HR faces (128×128)"; the
  # face world's frontalize pairing renders the frontal view of the input's face, expression and
  # lighting. The downsampling kernel is not named; bicubic, the common choice.
  c.data.update(source="faceworld", pairing="frontalize", input_size=16, target_size=128,
                downsample="bicubic", max_yaw=90.0)
  # §IV / §V-A: inputs at Multi-PIE's ±15 ... ±90° and the synthesized ±22, ±40, ±55, ±75°, not a
  # continuous range. () draws yaw uniformly in [-max_yaw, max_yaw] instead: the variant option
  # `data.yaw_set=()`, or --config.data.yaw_set='(30,75)' for another set.
  c.data.yaw_set = faceworld_params.PAPER_YAW_SET

  c.model = ml_collections.ConfigDict(dict(
      prior="estimated",             # estimated (VividGAN) | none (V-TN) | ground_truth (V+GT), §IV-A
      # Where the components are cut out during training: "predicted" landmarks of the coarse face
      # (as at test time; the paper runs a detector [57] on the coarse face) or the "target"'s.
      train_crop_landmarks="predicted",
      heatmap_sigma=1.0,             # Gaussian of the landmark heatmaps, in heatmap pixels (not given)
      # Widths are not given in the paper (Table IV: 103 MB of parameters for the coarse network,
      # 242 MB in all); ours: encoder width at 16², then one FT module per ×2 (16 -> 128).
      # bicubic_skip (not in the paper): the coarse face = bicubic(LR) + the network's residual,
      # starting at bicubic; hallujax/models/vividgan.py CoarseNetwork says why.
      coarse=dict(widths=(512, 256, 128, 64), localization_features=32, bicubic_skip=True),
      # Our stand-in for the detector [57]: an hourglass with 32² heatmaps for 128² faces.
      landmarks=dict(features=64, num_stacks=1, depth=3, reduction=4),
      touching_up=dict(widths=(32, 64, 128)),
      # Encoder 128² -> 32² (F_C), two stacked hourglasses [63] (F_H), integration block (Eq. 1-2,
      # "σ ... is set to 1"), decoder of FT modules 32² -> 128².
      fine=dict(encoder_widths=(64, 128, 256), hourglass_stacks=2, hourglass_depth=3, embedding=128,
                sigma=1.0),
      discriminator=dict(widths=(64, 128, 256, 512)),
      # Φ of Eq. 5: "the average pooling layer of the Resnet50 model"; frozen (weights.resnet50).
      identity=dict(stage_sizes=(3, 4, 6, 3), width=64),
  ))
  # Eq. 9-11: "α1, ψ1, α2, γ2 and ψ2 ... are set to 0.01"; L_mse, L_sys and L_T unweighted.
  c.loss = ml_collections.ConfigDict(dict(
      terms="full", symmetry=1.0, coarse_identity=0.01, coarse_adversarial=0.01, touching_up=1.0,
      fine_identity=0.01, heatmap=0.01, fine_adversarial=0.01))

  # §III-E: (i) coarse pretraining, (ii) touching-up pretraining, (iii) joint training. The paper
  # gives no step counts or batch size; ours: about 16 / 6 / 32 epochs of 100K pairs at batch 32.
  coarse_steps = ml_collections.FieldReference(50_000)
  touching_up_steps = ml_collections.FieldReference(20_000)
  joint_steps = ml_collections.FieldReference(100_000)
  c.stages = ml_collections.ConfigDict(dict(coarse=coarse_steps, touching_up=touching_up_steps,
                                            joint=joint_steps))
  c.train.steps = coarse_steps + touching_up_steps + joint_steps
  c.train.update(batch_size=32, log_every=100, eval_every=5_000, image_every=5_000, checkpoint_every=5_000)
  # §III-E (iii): "the learning rate for training our fine-integration subnetwork is set to 10^-3
  # while the learning rate for training the other networks is set to 10^-4". The pretraining
  # rates are not given: 10^-3 (Adam) for networks trained from scratch, then 10^-4 in stage (iii).
  # Each schedule counts its own network's updates (the coarse network and the landmark estimator
  # update in stages (i) and (iii), the U-Nets in (ii) and (iii), the fine network in (iii) only).
  joint_rate = 1e-4
  c.optim = ml_collections.ConfigDict(dict(
      coarse=dict(name="adam", learning_rate=1e-3, boundaries=coarse_steps, rates=joint_rate),
      landmarks=dict(name="adam", learning_rate=1e-3, boundaries=coarse_steps, rates=joint_rate),
      touching_up=dict(name="adam", learning_rate=1e-3, boundaries=touching_up_steps, rates=joint_rate),
      fine=dict(name="adam", learning_rate=1e-3),
      # The discriminators are "other networks" (10^-4); β1 = 0.5 as DCGAN (not given).
      coarse_discriminator=dict(name="adam", learning_rate=joint_rate, b1=0.5),
      fine_discriminator=dict(name="adam", learning_rate=joint_rate, b1=0.5),
  ))
  c.weights.resnet50 = ""  # torchvision resnet50 .pth for Φ (Eq. 5); empty: random, logged loudly
  # An in-project ArcFace run (configs/arcface.py) whose embedding network is Φ instead (overrides resnet50):
  # a recognizer trained on the face world's identities, for runs that cannot load ImageNet weights.
  c.weights.recognizer = ""
  # L_sys (Eq. 3) assumes "the frontal face is symmetric": the face world's frontal targets are mirror-
  # symmetric scenes only with data.symmetric_frontal (light from straight ahead, untilted background;
  # hallujax/data/faceworld.py). Measured: the tiny variant's test targets have L_sys 0.058 without it,
  # 0.0008 with it (python -m hallujax.tools.vividgan_symmetry --config configs/vividgan.py:tiny).
  c.data.symmetric_frontal = True

  if name == "smoke":
    # ×8 as the paper, at 8² -> 64²: component boxes scale to 16×16 eyes and nose, 12×24 mouth.
    c.data.update(input_size=8, target_size=64, num_identities=32, train_size=4096, eval_size=64)
    c.model.update(
        coarse=dict(widths=(64, 32, 32, 16), localization_features=8, bicubic_skip=True),
        landmarks=dict(features=16, num_stacks=1, depth=2, reduction=4),
        touching_up=dict(widths=(8, 16, 32)),
        fine=dict(encoder_widths=(16, 32, 32), hourglass_stacks=1, hourglass_depth=2, embedding=16, sigma=1.0),
        discriminator=dict(widths=(16, 32, 64)),
        identity=dict(stage_sizes=(1, 1, 1, 1), width=8))
    coarse_steps.set(300)
    touching_up_steps.set(60)
    joint_steps.set(240)
    c.train.update(batch_size=8, log_every=20, eval_every=600, eval_batches=8, image_every=600,
                   checkpoint_every=600)

  if name in ("tiny", "fig8"):
    # ×4 at 8² -> 32², the smallest networks that still have every part (the results tables' budget,
    # configs/tables/vividgan_*.py: one row trains and evaluates in about a minute on a laptop CPU).
    # At 32² the component boxes are 8×8 eyes and nose, 8×12 mouth.
    c.data.update(input_size=8, target_size=32, num_identities=32, train_size=2048, eval_size=64)
    c.model.update(
        coarse=dict(widths=(32, 16, 16), localization_features=4, bicubic_skip=True),
        landmarks=dict(features=8, num_stacks=1, depth=1, reduction=4),
        touching_up=dict(widths=(4, 8)),
        fine=dict(encoder_widths=(8, 16), hourglass_stacks=1, hourglass_depth=1, embedding=8, sigma=1.0),
        discriminator=dict(widths=(8, 16)),
        identity=dict(stage_sizes=(1, 1, 1, 1), width=8))
    coarse_steps.set(240)
    # Stage (ii) long enough to matter: on held-in batches the U-Nets' L_T is 0.042 vs the coarse
    # components' 0.044 after 20 steps (-3%), 0.032 vs 0.043 after 160 (-26%), 0.030 vs 0.045 after 360
    # (-33%), measured with configs/vividgan.py:tiny,stages.joint=0,stages.touching_up=400 (docs/vividgan.md).
    touching_up_steps.set(200)
    joint_steps.set(120)
    c.train.update(batch_size=8, log_every=20, eval_batches=8)
    for field in ("eval_every", "image_every", "checkpoint_every"):   # once, at the end (a reference: V-TN
      c.train[field] = c.train.get_ref("steps") * 1                  # and V+GT have no stage (ii))

  if name == "fig8":
    # Fig. 8's budget (configs/tables/vividgan_fig8.py): tiny with a longer stage (iii). §III-E: "since our
    # fine-integration subnetwork has not been initialized, the learning rate for training our fine-
    # integration subnetwork is set to 10^-3": it first learns in stage (iii). After tiny's 120 joint
    # steps the fine face is only 0.01-0.08 dB (V-TN) and 0.08-0.37 dB (V+GT) above the coarse face
    # (5 seeds): the fine network has not yet learnt to use any prior, so none can matter. Our choice:
    # 500 joint steps. Seed 0: V+GT - V-TN +0.71 dB at 500, +0.81 at 1000, +0.18 (5 seeds) at 120; the
    # paper's ×8 at 4² -> 32² with 120 joint steps gave +0.08 (docs/vividgan.md, "Fig. 8 with headroom").
    joint_steps.set(500)

  apply_variant_options(c, options)
  if c.model.prior != "estimated":
    touching_up_steps.set(0)   # V-TN and V+GT have no touching-up subnetwork to pretrain
  return c
