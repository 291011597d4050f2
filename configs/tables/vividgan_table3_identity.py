"""Paper 002 (VividGAN) Table III's L_id step with an L_id that is alive: L⁻_G against L†_G (+ L_id).

In vividgan_table3, L_id at the paper's weight (Eq. 9 and 11: "α1, ψ1, α2, γ2 and ψ2 ... are set to 0.01")
carries 0.56% of L_G, so its comparison is invalid: every term here is a mean over its elements (the paper's
squared Frobenius norms, scaled) and the paper's 0.01 was set for the 2,048 average-pooled features of an
ImageNet ResNet-50 (Eq. 5), not for this Φ, a 64-d in-project ArcFace embedding. Here L_id's weight in both
stages is 0.3, the smaller of the two weights measured on seed 0 (docs/vividgan.md, "Table III at fig8") whose
share passes the 5% check (0.3: 9.6%; 1.0: 23.8%). The L⁻_G row is vividgan_table3's (same spec, same runs).
The paper: L⁻_G 22.945 / 0.773 → L†_G 23.981 / 0.798 (CelebA, PSNR / SSIM).
"""

from configs.tables import ARCFACE_LOSS_NETWORK, VISIBLE_LOSS_SHARE
from configs.tables.vividgan_table3 import BASE
from hallujax.experiments import (Row, Table, eval_step_at_least, outputs_follow_inputs, outputs_vary,
                                 row_gap_at_least)

IDENTITY_WEIGHT = 0.3


def table() -> Table:
  return Table(
      name="vividgan_table3_identity",
      title=f"VividGAN Table III's L_id step with L_id alive (λ_id = {IDENTITY_WEIGHT}, ×4 at 32²)",
      paper="paper 002 §V-D, Table III (CelebA 16² → 128²: L⁻_G 22.945 / 0.773, L†_G 23.981 / 0.798)",
      budget="configs/vividgan.py:fig8 — 8² → 32² frontalization, yaw from the paper's ±15…±90° set, "
             "tiny networks, stages of 240 coarse / 200 touching-up / 500 joint steps at batch 8",
      rows=(
          Row(f"L†_G (+ L_id, λ_id {IDENTITY_WEIGHT})",
              f"{BASE},loss.terms=identity,loss.coarse_identity={IDENTITY_WEIGHT},"
              f"loss.fine_identity={IDENTITY_WEIGHT}"),
          Row("L⁻_G (L_mse, L_h)", f"{BASE},loss.terms=mse_h"),
          Row("bicubic (floor)", f"{BASE},loss.terms=mse_h", column="bicubic"),
      ),
      metrics=("psnr", "ssim", "identity_loss_share"),
      order=(f"L†_G (+ L_id, λ_id {IDENTITY_WEIGHT})", "L⁻_G (L_mse, L_h)"),
      order_metric="psnr",
      eval_examples=512,
      recognizer="",
      prerequisites=(ARCFACE_LOSS_NETWORK,),
      eval_step_metrics=("identity_loss_share",),
      checks=(
          outputs_vary(min_ratio=0.5),
          outputs_follow_inputs(),
          row_gap_at_least("L⁻_G (L_mse, L_h)", "bicubic (floor)", "psnr", 0.5, "the model above the floor"),
          eval_step_at_least("identity_loss_share", VISIBLE_LOSS_SHARE, "L_id carries a visible share of L_G",
                             rows=(f"L†_G (+ L_id, λ_id {IDENTITY_WEIGHT})",)),
      ),
      notes=("Not the paper's weight: λ_id = 0.3 in both stages, chosen so that L_id passes the 5% share check "
             "(the paper's 0.01 gives 0.56% with this Φ; vividgan_table3).",
             "Φ is the `{arcface}` prerequisite's embedding network, as in vividgan_table3."),
  )
