"""Paper 000 (VPFL) Table 6 on the face world: federated thermal → visible over 8 clients at 2 institutions.

The paper's sub-tables are the VIS-TH and ARL-VTF test sets and their average; here "site0" and "site1"
are the face world's two institutions (two thermal sensors, each split into 4 clients by Dirichlet(0.3)),
and the unprefixed columns average both. Local Only is shown for one client of each institution (C1, C5:
their models on both sites' test sets), Fused is the mean output of the 8 local models. PSNR columns come
from the method's own evaluation; Rank-1 / identity cosine from the independent recognizer, where the
run's evaluate rows have them (the models that make one image per input).
Budget: the smoke variant (16² → 64², 8 clients × 40 steps of batch 4, P = 10 local steps per round).
"""

from configs.tables import RECOGNIZER_64
from configs.tables.vpgan_table5 import PREREQUISITES, WEIGHTS
from hallujax.experiments import Row, Table, eval_step_at_least, outputs_vary, prior_draws_faces, row_gap_at_least

SITES = ("psnr", "site0_psnr", "site1_psnr")


def eval_step(prefix: str) -> tuple[tuple[str, str], ...]:
  return tuple((name, f"{prefix}{name}") for name in SITES)


def table() -> Table:
  local = f"configs/vpfl.py:smoke,strategy=local_only,{WEIGHTS}"
  return Table(
      name="vpfl_table6",
      title="VPFL Table 6 on the face world: federated thermal → visible, 8 clients at 2 institutions",
      paper="paper 000 §4.3, Table 6 (VIS-TH, ARL-VTF and their average)",
      budget="configs/vpfl.py:smoke — 16² thermal → 64² visible, 8 clients × 40 steps of batch 4, rounds of "
             "P = 10 local steps, the 64² in-project prior of vpgan_table5",
      prerequisites=PREREQUISITES,
      rows=(
          Row("Local Only C1", local, from_eval_step=eval_step("client0_")),
          Row("Local Only C5", local, from_eval_step=eval_step("client4_")),
          Row("Fused", local, from_eval_step=eval_step("fused_")),
          Row("FedProx", f"configs/vpfl.py:smoke,strategy=fedprox,{WEIGHTS}"),
          Row("VPFL w/o MPR", f"configs/vpfl.py:smoke,strategy=fedavg,{WEIGHTS}"),
          Row("VPFL", f"configs/vpfl.py:smoke,{WEIGHTS}"),
          Row("Centralized", f"configs/vpfl.py:smoke,strategy=centralized,{WEIGHTS}"),
          Row("ground truth (ceiling)", f"configs/vpfl.py:smoke,{WEIGHTS}", column="target"),
      ),
      metrics=(*SITES, "rank1", "vr_at_far_1e-2", "identity_cosine"),
      order=("Centralized", "VPFL", "VPFL w/o MPR", "FedProx", "Fused"),
      order_metric="psnr",
      recognizer=RECOGNIZER_64,
      # The per-site PSNRs of the federated rows are VPFL's own eval_step means (evaluate's rows average both sites).
      eval_step_metrics=("site0_psnr", "site1_psnr"),
      checks=(
          outputs_vary(min_ratio=0.5),   # 8 of 9 federated runs at exactly 17/1024 Rank-1 was one face (issue 26)
          # MPR is alive: its share of a client's generator loss; below 5% "VPFL vs VPFL w/o MPR" compares
          # one model with itself.
          eval_step_at_least("mpr_loss_share", 0.05, "MPR carries a visible share of the loss", rows=("VPFL",)),
          # Something for MPR to correct: client encoders drift from the global model's (non-IID sites). The bound
          # is "above zero" in the units of VPFL's client_drift (mean feature distance).
          eval_step_at_least("client_drift", 1e-3, "the clients drift from the global model",
                             rows=("VPFL w/o MPR",)),
          prior_draws_faces(min_detection_ratio=0.8),
          row_gap_at_least("ground truth (ceiling)", "VPFL", "rank1", 0.1, "headroom under the ground truth"),
      ),
      notes=("ground truth (ceiling): the visible ground truth through the same recognizer and gallery.",),
  )
