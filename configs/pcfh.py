"""PCFH (paper 001): NIR → VIS on unaligned pairs, 256² (the paper's headline), 144², or a CPU smoke run.

Variants (one grammar, hallujax.config_base.parse_variant):

    configs/pcfh.py                   the paper's 256² run on the face world's nir_unaligned pairs
    configs/pcfh.py:144               the paper's 144² setting (§4.2's 144² crop sizes)
    configs/pcfh.py:smoke             64², tiny networks: minutes on a laptop CPU

and, after any of them, ``ablation=NAME`` for Tables 1, 3, 4's rows:

    wo_awm     PCFH w/o AWM (λ4 = 0: no warp, no attention module)
    wo_mic     PCFH w/o MIC (λ5 = 0: no estimator)
    pix2pix    the pix2pix-style baseline (U-Net, conditional PatchGAN, 100·L1 to the unaligned VIS):
               config.method = "pix2pix" (hallujax/methods/pix2pix.py)
    cyclegan   the CycleGAN-style baseline (two ResNet generators, two PatchGANs, LSGAN, cycle 10):
               config.method = "cyclegan" (hallujax/methods/cyclegan.py)

and ``lightcnn=RUN_DIR``: L_ID (λ2 = 0.002, §4.2) with the LightCNN-29 of an in-project run, trained
once on both spectra (``configs/lightcnn.py:smoke,spectra=nir_vis`` for the smoke variant's 32²; the
paper's recognizer is a NIR-VIS one, §4.2), e.g. ``configs/pcfh.py:smoke,lightcnn=runs/lightcnn_nir_vis``.

e.g. ``configs/pcfh.py:smoke,ablation=wo_mic,seed=1``. Any other ``key=value`` is a dotted config
field. The "LightCNN on raw NIR" row of Table 1 needs no training: every evaluation reports it
(``rank1_nir``) next to the generated and fused figures.
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant

VARIANTS = ("", "144", "smoke")
ABLATIONS = ("", "wo_awm", "wo_mic", "pix2pix", "cyclegan")


def get_config(argument: str = "") -> ml_collections.ConfigDict:
  variant, options = parse_variant(argument, VARIANTS, "configs/pcfh.py")
  ablation = options.pop("ablation", "")
  lightcnn_run = options.pop("lightcnn", "")
  if ablation not in ABLATIONS:
    raise ValueError(f"configs/pcfh.py: ablation={ablation!r} is not known; known: "
                     f"{', '.join(a for a in ABLATIONS if a)}.")
  c = base_config()
  c.method = "pcfh"
  c.ablation = ablation   # which of ABLATIONS this config is ("" = PCFH itself): a record for the tables
  # §4.1: CASIA NIR-VIS 2.0 (725 subjects; fold 1 trains on ~357), images that "vary in poses and
  # expressions". Face world stand-in: NIR of one view, VIS of the same person in another pose,
  # expression and lighting (nir_unaligned), 68 landmarks for both; NIR as one grey channel.
  # Pose ranges (our choice): CASIA's faces are near frontal with moderate pose changes.
  c.data.update(source="faceworld", pairing="nir_unaligned", input_channels=1, input_size=256,
                target_size=256, num_identities=360, identity_split="disjoint",
                max_yaw=30.0, max_pitch=15.0, max_roll=10.0)
  c.model = ml_collections.ConfigDict(dict(
      # G_A's global path and G_B: the paper shows no layers; CycleGAN's ResNet generator
      # (2 downsamplings, 9 residual blocks at 256²), which §3.1 builds on.
      features=64, downsamplings=2, blocks=9,
      # Local paths on the eyes, nose and mouth (§3.2, TP-GAN-style), crops per §4.2.
      local_paths=True, local_features=64, local_blocks=3,
      critic_features=64, critic_layers=3,        # D_A: a 70×70 PatchGAN body scored as one WGAN critic
      attention_features=32, attention_layers=3,  # A
      estimator_size=32, estimator_features=32, estimator_layers=3,   # NE, on 32² area-pooled images
      identity_size=128,                          # LightCNN-29 v2's input size
      unet_depth=8,                               # the pix2pix baseline's U-Net levels: unet_256
  ))
  c.loss = ml_collections.ConfigDict(dict(
      adversarial=1.0,          # L_ad, Eq. 1 (no weight in Eq. 5)
      reconstruction=2.5e-5,    # λ1, L_rec (Eq. 2): on per-image sums
      identity=0.002,           # λ2, L_ID (Eq. 3): on the sum over LightCNN's 256 features
      luminance=0.1,            # λ3, L_Y (Eq. 4): on the mean
      awm=2.5e-5,               # λ4, L_AWM (Eq. 8): on per-image sums
      mic=0.1,                  # λ5, L_MIC (Eq. 9): on the estimates (nats)
      attention_l1=3.0,         # α1 (Eq. 7): on the mean
      attention_rank=0.003,     # α2: on the nuclear norm of each attention map
      attention_sparsity=1e-6,  # α3: on per-image sums of Att
      gradient_penalty=10.0,    # D_A (WGAN-GP; the paper is silent on D_A's own loss)
      sum_reference_size=256,   # sums are taken "as at" this size² (methods/pcfh.py says why)
      pix2pix_l1=100.0,         # pix2pix baseline's λ_L1 (Isola et al.)
      cycle=10.0,               # CycleGAN baseline's λ_cyc (Zhu et al.)
  ))
  # The paper gives no optimizer. Generators, A and NE: Adam 2e-4, β = (0.5, 0.999) (CycleGAN's);
  # D_A: WGAN-GP's Adam 1e-4, β = (0, 0.9); the baselines' discriminators: Adam 2e-4, (0.5, 0.999).
  # NE: Adam 1e-3, one update a step on all B·(B−1) off-diagonal pairs (our choice, measured alone on the
  # smoke variant's held-out pairs with the aligned VIS image as the output, 16², batch 8: 2e-4 gave
  # 0.005 nats after 100 steps, 1e-3 0.45 after 100 and 0.8 after 200; 5 or 10 updates a step on the
  # same batch overfit it: 2.9 nats on the batch, −1.1 held out).
  adam = lambda rate, b1, b2: dict(name="adam", learning_rate=rate, b1=b1, b2=b2)
  c.optim = ml_collections.ConfigDict(dict(
      generator=adam(2e-4, 0.5, 0.999), auxiliary=adam(2e-4, 0.5, 0.999),
      attention=adam(2e-4, 0.5, 0.999), estimator=adam(1e-3, 0.5, 0.999),
      critic=adam(1e-4, 0.0, 0.9), critic_nir=adam(2e-4, 0.5, 0.999),
      discriminator=adam(2e-4, 0.5, 0.999)))
  c.weights.lightcnn = ""     # LightCNN_29Layers_V2_checkpoint.pth.tar or a configs/lightcnn.py run; empty: random, logged loudly
  # Batch and length: the paper gives neither; ~70 epochs of CASIA fold 1's ~6k NIR training images.
  c.train.update(batch_size=8, steps=50_000, log_every=100, eval_every=2_500, eval_batches=8,
                 image_every=2_500, checkpoint_every=2_500)
  # Our addition, off: Att ≡ 1 for the first steps, then A trains (methods/pcfh.py).
  c.train.attention_warmup_steps = 0
  c.train.estimator_steps = 1   # NE's updates on each step's batch (methods/pcfh.py: train_estimator)

  if variant == "144":
    c.data.update(input_size=144, target_size=144)
    c.model.update(blocks=6, estimator_size=36, unet_depth=4)
    c.loss.sum_reference_size = 144
  elif variant == "smoke":
    c.data.update(input_size=64, target_size=64, num_identities=40, train_size=4096, eval_size=64)
    c.model.update(features=16, blocks=2, local_features=8, local_blocks=1, critic_features=16,
                   attention_features=8, estimator_size=16, estimator_features=8, identity_size=32,
                   unet_depth=6)
    c.train.update(batch_size=8, steps=200, log_every=25, eval_every=100, eval_batches=4,
                   image_every=100, checkpoint_every=100)
    # No LightCNN weights can be downloaded here, and a random LightCNN is no identity network: its
    # features point the same way for every face (cosine 0.9995) and λ2·Σ|ΔF| was ~30, 50× all other
    # terms together, turning the output into noise in a 200-step run. The smoke run leaves L_ID off;
    # ``lightcnn=RUN_DIR`` (a configs/lightcnn.py:smoke,spectra=nir_vis run) turns it on at λ2 = 0.002: with
    # that network's 400-step weights λ2·Σ|ΔF| was 17% of the generator loss (docs/pcfh.md, issue 33).
    c.loss.identity = 0.0
    # Balance at this size (our change; the paper configs keep L_ad's weight 1): a WGAN-GP critic has
    # ‖∇D‖ ≈ 1 per image, so −E D(G) moves each of the 64²×3 output values by ~1/(B·√N) = 1.1e-3,
    # while λ4's per-image sum moves it by λ4·(256/64)²/B/2 = 2.5e-5. With weight 1 the 200-step
    # smoke output was critic-chasing noise (held-out L1 to I_Warp 0.55 -> 0.58 at step 100);
    # 0.02 makes the two per-value pulls equal. A faster rate for the generators: 200 steps only.
    # At pcfh_table1's budget (100 steps, plain background, L_ID on) the paper's weight 1 and 0.2 do not
    # help either: diversity 0.48 / 0.56 of the targets', but 88% / 100% of outputs nearest one target
    # (64 test pairs, seed 0; docs/pcfh.md, "Issue 33, third round").
    c.loss.adversarial = 0.02
    for network in ("generator", "auxiliary", "attention"):
      c.optim[network].learning_rate = 5e-4

  if ablation == "wo_awm":
    c.loss.awm = 0.0
  elif ablation == "wo_mic":
    c.loss.mic = 0.0
  elif ablation == "pix2pix":
    c.method = "pix2pix"
  elif ablation == "cyclegan":
    c.method = "cyclegan"
    c.optim.critic = adam(2e-4, 0.5, 0.999)   # an LSGAN PatchGAN here, not the WGAN critic
  if lightcnn_run:
    c.weights.lightcnn = lightcnn_run
    c.loss.identity = 0.002   # λ2 (§4.2), on for every variant once a trained LightCNN is given
  return apply_variant_options(c, options)
