"""Paper 000 (VPGAN) Table 5 on the face world: the visual prior and MSCA ablations.

The paper (VIS-TH, 128² → 512²): VPGAN > w/o MSCA > w/o VP on Rank-1 and Deg. (the cosine between
recognition features of output and ground truth; "identity_cosine" here). Budget: the smoke
variant — 16² thermal → 64² visible, a 64² StyleGAN2 prior trained in-project on the face world's
visible faces (configs/vpgan.py:prior_smoke, PRIOR_STEPS = 30,000 steps of batch 8), 300 steps of batch 4.

The face world: data.uniform_appearance (hallujax/data/faceworld.py: UNIFORM_APPEARANCE), one scene and one set of
colours for every face, so that the thermal input determines the visible face as paper 000 assumes (its prior
supplies "face geometry, color and texture", §3.1; ARL-VTF varies "only in expressions", §4). With the default
face world the visible targets carry a random background, shirt, light, skin tone and hair colour that no thermal
image shows, and predictors that read the thermal input reach only 0.25-0.40 of the targets' diversity (one seed,
docs/vpgan.md), so every row failed outputs_vary by construction.
"""

from configs.tables import ARCFACE_LOSS_NETWORK, RECOGNIZER_64, VISIBLE_LOSS_SHARE
from hallujax.experiments import (Row, Table, eval_step_at_least, outputs_follow_inputs,
                                 outputs_vary, prior_draws_faces, row_gap_at_least)

# The prior and the identity loss's ArcFace (λc, Eq. 6) are training inputs, trained once; the table's
# identity columns use a different recognizer (Table.recognizer) that no VPGAN run saw. VPFL's table shares them.
# The prior draws the faces the targets show: it trains on the same face world (data.uniform_appearance).
WORLD = "data.uniform_appearance=True"
# The prior's length, by a rule stated before the check was measured at 512 (docs/vpgan.md): the longest-trained prior
# (30,000 steps) if it passes the check, else 24,000 if it does, else 6,000. Measured once with the check's count
# (docs/vpgan.md, 512 samples against 512 held-out faces): dlib finds faces in 278/512 of the 30,000-step prior's
# samples against 295/512 of the faces (ratio 0.94, it passes), 281/512 at 24,000 steps (0.95), 113/512 at 6,000
# (0.38, fails). The 30,000 steps trained in about 3.6 h wall in all (2 cores shared with other runs, docs/vpgan.md).
PRIOR_STEPS = 30000
# The prior check's count: 512 samples against 512 held-out faces (the check's default, prior_draws_faces): at 64 (the
# count until issue 32's fix) the ratio's binomial standard error at the 0.8 threshold is 0.12 and one face moves it
# by 0.02-0.03, so the threshold was decided by sampling noise; at 512 it is 0.044 (the reason is written next to the
# check). Chosen from that noise argument before the priors were measured at 512, not from which prior passes.
PRIOR_CHECK_COUNT = 512
PREREQUISITES = (("prior", f"configs/vpgan.py:prior_smoke,train.steps={PRIOR_STEPS},{WORLD}"), ARCFACE_LOSS_NETWORK)
WEIGHTS = "weights.prior={prior},weights.arcface={arcface}"
BASE = f"configs/vpgan.py:smoke,{WORLD},{WEIGHTS}"


def table() -> Table:
  return Table(
      name="vpgan_table5",
      title="VPGAN Table 5 on the face world (thermal → visible): visual prior and MSCA ablations",
      paper="paper 000 §4.2, Table 5 (VIS-TH: Rank-1 and Deg.)",
      budget="configs/vpgan.py:smoke — 16² thermal → 64² visible, 300 steps of batch 4, a 64² StyleGAN2 "
             f"prior trained in-project (configs/vpgan.py:prior_smoke, {PRIOR_STEPS} steps); the face world with "
             "data.uniform_appearance (what a thermal image cannot show is the same for every face)",
      prerequisites=PREREQUISITES,
      rows=(
          Row("bicubic", BASE, column="bicubic"),
          Row("VPGAN w/o VP", f"{BASE},ablation=wo_vp"),
          Row("VPGAN w/o MSCA", f"{BASE},ablation=wo_msca"),
          Row("VPGAN", BASE),
          Row("ground truth (ceiling)", BASE, column="target"),
      ),
      metrics=("rank1", "identity_cosine", "vr_at_far_1e-2", "psnr", "ssim", "niqe"),   # NIQE: paper 000 §4
      order=("VPGAN", "VPGAN w/o MSCA", "VPGAN w/o VP"),
      order_metric=("rank1", "identity_cosine"),   # the paper: "on Rank-1 and Deg."
      recognizer=RECOGNIZER_64,
      checks=(
          # Rank-1 of exactly 12/1000 in every seed was one face for every probe (issue 26).
          outputs_vary(min_ratio=0.5),
          outputs_follow_inputs(),   # each output follows its own input, not noise: every method row
          eval_step_at_least("identity_loss_share", VISIBLE_LOSS_SHARE, "the identity loss carries a visible share",
                             rows=("VPGAN",)),
          # The visual prior is only worth comparing against its absence if it draws faces: the comparison
          # that involves "w/o VP" is the one about the prior.
          prior_draws_faces(min_detection_ratio=0.8, count=PRIOR_CHECK_COUNT, rows=("VPGAN w/o VP",)),
          row_gap_at_least("ground truth (ceiling)", "bicubic", "rank1", 0.1, "headroom above the bicubic floor"),
      ),
      notes=("bicubic (of the 16² thermal input) is the floor and ground truth (ceiling) the ceiling: the same "
             "recognizer and gallery on the visible ground truth.",
             "NIQE (lower is more natural) is computed on images enlarged to 192² (hallujax/metrics/niqe.py); "
             "read it against the ground truth's.",
             "data.uniform_appearance: one light, grey background, shirt, skin, hair, eye and lip colour for every "
             "face, the parts of a visible face a thermal (LWIR) image cannot show. Measured once (seed 0, 256 test "
             "faces, docs/vpgan.md): predictors that read the thermal input reach 0.70-0.86 of the targets' "
             "diversity (0.25-0.40 on the default face world); at 300 steps, VPGAN's outputs 0.85 with 3% of them "
             "nearest one target (0.85 and 2% with the 1,200-step prior), w/o VP's 0.69 and 8% (1,200-step prior's "
             "discriminator); the ground truth's Rank-1 0.73 against bicubic's 0.02.",
             "VPGAN w/o VP starts its discriminator from the same prior file as VPGAN, so the rows differ in the "
             "generator only."),
  )
