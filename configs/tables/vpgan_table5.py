"""Paper 000 (VPGAN) Table 5 on the face world: the visual prior and MSCA ablations.

The paper (VIS-TH, 128² → 512²): VPGAN > w/o MSCA > w/o VP on Rank-1 and Deg. (the cosine between
recognition features of output and ground truth; "identity_cosine" here). Budget: the smoke
variant — 16² thermal → 64² visible, a 64² StyleGAN2 prior trained in-project on the face world's
visible faces (configs/vpgan.py:prior_smoke, 1,200 steps of batch 8), 300 steps of batch 4.
"""

from hallujax.experiments import Row, Table

# The prior and the identity loss's ArcFace (λc, Eq. 6) are training inputs, trained once; the table's
# identity columns use a different recognizer (Table.recognizer) that no VPGAN run saw. VPFL's table shares them.
PREREQUISITES = (("prior", "configs/vpgan.py:prior_smoke,train.steps=1200"),
                 ("arcface", "configs/arcface.py:smoke,data.num_identities=64,train.steps=1500,"
                             "train.eval_every=500,train.checkpoint_every=500"))
WEIGHTS = "weights.prior={prior},weights.arcface={arcface}"
BASE = f"configs/vpgan.py:smoke,{WEIGHTS}"


def table() -> Table:
  return Table(
      name="vpgan_table5",
      title="VPGAN Table 5 on the face world (thermal → visible): visual prior and MSCA ablations",
      paper="paper 000 §4.2, Table 5 (VIS-TH: Rank-1 and Deg.)",
      budget="configs/vpgan.py:smoke — 16² thermal → 64² visible, 300 steps of batch 4, a 64² StyleGAN2 "
             "prior trained in-project (configs/vpgan.py:prior_smoke)",
      prerequisites=PREREQUISITES,
      rows=(
          Row("bicubic", BASE, column="bicubic"),
          Row("VPGAN w/o VP", f"{BASE},ablation=wo_vp"),
          Row("VPGAN w/o MSCA", f"{BASE},ablation=wo_msca"),
          Row("VPGAN", BASE),
      ),
      metrics=("rank1", "identity_cosine", "vr_at_far_1e-2", "psnr", "ssim"),
      order=("VPGAN", "VPGAN w/o MSCA", "VPGAN w/o VP"),
      order_metric=("rank1", "identity_cosine"),   # the paper: "on Rank-1 and Deg."
  )
