"""Paper 001 (PCFH) Table 1 on the face world: recognition of NIR faces turned visible, with ablations.

The paper's rows are LightCNN on raw NIR, pix2pix, CycleGAN, PCFH w/o AWM, PCFH w/o MIC and PCFH on
CASIA NIR-VIS 2.0 (Rank-1, VR@FAR=1%, VR@FAR=0.1%). Here every identity column comes from the
independent in-project ArcFace (no LightCNN-29 weights can be downloaded here), so the first row is
"that recognizer on raw NIR" (grey repeated over RGB). Budget: the smoke variant (64², tiny networks,
100 steps, batch 8) with 200 identities (20 held-out test identities, disjoint from training).

L_ID (λ2 = 0.002) uses an in-project LightCNN-29 v2 trained once on both spectra (the `lightcnn` prerequisite),
as the paper's recognizer is NIR-VIS. The face world is data.uniform_appearance (one background, light, shirt,
skin, hair, eye and lip colour for every visible view), since colours no NIR input can predict pull an L1 model
towards the mean face (issue 33; see WORLD below and docs/pcfh.md).
"""

from configs.tables import RECOGNIZER_64
from hallujax.experiments import (Row, Table, eval_step_at_least, outputs_follow_inputs,
                                 outputs_vary, row_gap_at_least)

# L_ID's LightCNN: NIR + visible images of the training identities at 32², 600 steps (cross-spectral Rank-1 0.238
# against chance 0.082 on 256 held-out probes, one seed, docs/pcfh.md).
PREREQUISITES = (("lightcnn", "configs/lightcnn.py:smoke,spectra=nir_vis,train.steps=600"),)
# The face world: data.uniform_appearance (hallujax/data/faceworld.py: UNIFORM_APPEARANCE) gives every visible view,
# the other-pose target and the input's own-pose view alike, one flat grey background, one light and one shirt, skin,
# hair, eye and lip colour; the NIR inputs, identities, shapes, poses and pairings are those of the option off
# (tests/test_faceworld_uniform_appearance.py). Paper 001 trains on real NIR-VIS pairs (CASIA NIR-VIS 2.0, §4.1) whose
# visible images vary in all of these, and real NIR at ~850 nm does see some of skin tone (skin reflectance there
# depends weakly on melanin). The face world draws its NIR reflectances apart from the visible colours, so there a
# NIR image predicts none of them, and an L1-trained translator regresses to the mean face: with the plain
# background alone, ridge regression on the NIR pixels reached 0.35-0.67 of the aligned targets' diversity and the
# 16 PCFH settings measured (100-300 steps) all failed outputs_vary. With this option what the NIR image shows (shape,
# pose, expression, hair outline) sets the target: ridge 0.66-0.90, and at seed 0 PCFH, w/o MIC and w/o AWM passed
# every check (docs/pcfh.md, issue 33 fifth round). A face-world setting that makes the check decidable, as for
# VPGAN's Table 5, not the paper's data. The LightCNN prerequisite (trained on the default world's colours) still tells
# PCFH's test people apart on these visible images (VIS Rank-1 0.65 against 0.70 on the plain background, chance
# 0.055), so it is not retrained.
WORLD = "data.uniform_appearance=True"
BASE = ("configs/pcfh.py:smoke,data.num_identities=200," + WORLD + ",lightcnn={lightcnn},"
        "train.steps=100,train.eval_every=100")


def table() -> Table:
  return Table(
      name="pcfh_table1",
      title="PCFH Table 1 on the face world (NIR → VIS, unaligned pairs)",
      paper="paper 001 §4.3, Table 1 (CASIA NIR-VIS 2.0: Rank-1 / VR@FAR=1% / VR@FAR=0.1%)",
      budget="configs/pcfh.py:smoke — 64², tiny networks, 100 steps of batch 8 (800 pairs; the smoke run's PSNR fell between steps 100 and 200 in both seeds measured before, docs/pcfh.md), "
             "200 identities (20 test identities disjoint from training), data.uniform_appearance (one background, light and set of colours for every visible face), L_ID from the "
             "`lightcnn` prerequisite (LightCNN-29 v2 trained on both spectra)",
      rows=(
          Row("Recognizer on raw NIR", BASE, column="input"),
          Row("pix2pix", f"{BASE},ablation=pix2pix"),
          Row("CycleGAN", f"{BASE},ablation=cyclegan"),
          Row("PCFH w/o AWM", f"{BASE},ablation=wo_awm"),
          Row("PCFH w/o MIC", f"{BASE},ablation=wo_mic"),
          Row("PCFH", BASE),
          Row("ground truth (ceiling)", BASE, column="target"),
      ),
      metrics=("rank1", "rank1_fused", "vr_at_far_1e-2", "vr_at_far_1e-3", "psnr", "ssim", "mi_output_nir"),
      eval_step_metrics=("mi_output_nir",),
      prerequisites=PREREQUISITES,
      order=("PCFH", "PCFH w/o MIC", "PCFH w/o AWM", "Recognizer on raw NIR"),
      order_metric=("rank1", "psnr"),   # the paper's Table 1 is Rank-1; PSNR shows the translation itself
      recognizer=RECOGNIZER_64,
      checks=(
          outputs_vary(min_ratio=0.5),
          outputs_follow_inputs(),   # each output follows its own input, not noise: every method row
          # The MIC is alive: the MI estimator's Donsker–Varadhan estimate of I(G_A(I_N); I_N) on held-out pairs.
          # At 0.001 nats λ5's term is ~1e-4 and "PCFH vs PCFH w/o MIC" compares a model with itself.
          eval_step_at_least("mi_output_nir", 0.05, "the MI estimate is above zero", rows=("PCFH",)),
          # A ceiling above the floor: the ground truth identifies well above the raw NIR input.
          row_gap_at_least("ground truth (ceiling)", "Recognizer on raw NIR", "rank1", 0.1,
                           "headroom between the raw input and the ground truth"),
      ),
      notes=("PSNR / SSIM are against the visible image in the NIR input's own pose (the face world renders "
             "it; CASIA has none), so they measure the whole NIR→VIS translation, geometry included.",
             "rank1_fused is the paper's protocol (§4.2): the mean of the raw-NIR pair's and the generated "
             "pair's scores; rank1 is the generated image alone. The verdicts use rank1: on the face world the "
             "raw NIR input is at chance for the recognizer, so fusing with it adds the raw pair's noise to the "
             "generated image's evidence rather than information.",
             "mi_output_nir: the estimator NE's held-out estimate of I(G_A(I_N); I_N), which the MIC term minimises "
             "(the paper's text). Measured on one seed (docs/pcfh.md): it rises to 0.14 nats by step 100 at λ5 = "
             "0.1 and is then pushed back to about 0.02, while with λ5 = 1e-6 it reaches 1.02 by step 150. A low "
             "value late in training can therefore mean a minimised MI, not a dead estimator; at this table's 100 "
             "steps it measures the estimator's reach.",
             "Recognizer on raw NIR is the floor and ground truth (ceiling) the ceiling: the same recognizer and "
             "gallery on the NIR input and on the visible ground truth.",
             "outputs_vary and the face world (docs/pcfh.md, issue 33 third to fifth rounds): with random skin, hair "
             "and clothing colours (even on a plain background) a NIR image cannot predict most of a visible target, an "
             "L1-trained translator regresses to the mean face, and none of 16 PCFH settings (100-300 steps) passed. "
             "On data.uniform_appearance, predictors reading the NIR input reach 0.66-0.90 of the targets' diversity "
             "(ridge regression), and at seed 0 PCFH scored 0.79 / 20% nearest one target, w/o MIC 0.77 / 26%, w/o "
             "AWM 1.07 / 33% (its outputs are mostly colour speckle over the head outline: SSIM 0.11, against 0.46 "
             "for PCFH), raw NIR 0.74 / 41%; own-target shares 119, 116, 24 and 139 × chance. At seed 1 w/o AWM's "
             "nearest share was 49.6% (one output under the check's edge; PCFH 0.71 / 28%, w/o MIC 0.75 / 21%)."),
  )
