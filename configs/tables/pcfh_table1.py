"""Paper 001 (PCFH) Table 1 on the face world: recognition of NIR faces turned visible, with ablations.

The paper's rows are LightCNN on raw NIR, pix2pix, CycleGAN, PCFH w/o AWM, PCFH w/o MIC and PCFH on
CASIA NIR-VIS 2.0 (Rank-1, VR@FAR=1%, VR@FAR=0.1%). Here every identity column comes from the
independent in-project ArcFace (no LightCNN-29 weights can be downloaded here), so the first row is
"that recognizer on raw NIR" (grey repeated over RGB). Budget: the smoke variant (64², tiny networks,
100 steps, batch 8) with 200 identities (20 held-out test identities, disjoint from training).

L_ID (λ2 = 0.002) uses an in-project LightCNN-29 v2 trained once on both spectra (the `lightcnn` prerequisite),
as the paper's recognizer is NIR-VIS; the visible targets stand on one flat grey background
(data.plain_background), since a random saturated background is something no NIR input can predict and pulls an
L1 model towards the mean (issue 33; measured in docs/pcfh.md).
"""

from configs.tables import RECOGNIZER_64
from hallujax.experiments import (Row, Table, eval_step_at_least, outputs_follow_inputs,
                                 outputs_vary, row_gap_at_least)

# L_ID's LightCNN: NIR + visible images of the training identities at 32², 600 steps (cross-spectral Rank-1 0.238
# against chance 0.082 on 256 held-out probes, one seed, docs/pcfh.md).
PREREQUISITES = (("lightcnn", "configs/lightcnn.py:smoke,spectra=nir_vis,train.steps=600"),)
BASE = ("configs/pcfh.py:smoke,data.num_identities=200,data.plain_background=True,lightcnn={lightcnn},"
        "train.steps=100,train.eval_every=100")


def table() -> Table:
  return Table(
      name="pcfh_table1",
      title="PCFH Table 1 on the face world (NIR → VIS, unaligned pairs)",
      paper="paper 001 §4.3, Table 1 (CASIA NIR-VIS 2.0: Rank-1 / VR@FAR=1% / VR@FAR=0.1%)",
      budget="configs/pcfh.py:smoke — 64², tiny networks, 100 steps of batch 8 (800 pairs; the smoke run's PSNR fell between steps 100 and 200 in both seeds measured before, docs/pcfh.md), "
             "200 identities (20 test identities disjoint from training), flat grey visible backgrounds, L_ID from the "
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
             "outputs_vary on this face world (docs/pcfh.md, issue 33 third round): a NIR image predicts no skin, hair "
             "or clothing colour, and the check does not need colour. Mean colours with each target's own luminance "
             "score 0.97 / 2% nearest one target. It does need the input's structure (pose, shape, shading). An "
             "L1-best regressor that shrinks toward the mean face fails it. At this budget no PCFH setting measured "
             "passed: no cycle, no critic, the paper's critic weight 1, attention warm-up, a 4x rate, or 200 steps. "
             "Without L_ID and with the critic at 0.2 the check passed on 64 pairs but failed on 256 (0.52 / 92%), "
             "and its outputs were checkerboard noise (SSIM 0.08). "
             "CycleGAN passed (0.56 / 33%), because its outputs follow the input's pose. pix2pix fails at 100 and "
             "300 steps, because its L1 to an unaligned target gives the mean pose (the paper's §4.3 account of "
             "pix2pix). A fourth round (docs/pcfh.md, 256 pairs, seed 0) made L_AWM the strongest push on G_A "
             "(λ4 × 16): PSNR 17.5 and SSIM 0.50, the best translation measured, but diversity 0.30, since the L1 "
             "pull on the warped image regresses to a blurred mean face. Att ≡ 1 and 300 steps did not raise it. "
             "A strong cycle term reached diversity 0.54 with 63% nearest one target, and L_Y at L_AWM's strength "
             "reached 32% nearest with diversity 0.41. No setting passed both halves, so BASE is unchanged. Every "
             "setting passed outputs_follow_inputs (17-52 × chance)."),
  )
