"""Paper 000 (VPFL) Table 6 on the face world: federated thermal → visible over 8 clients at 2 institutions.

The paper's sub-tables are the VIS-TH and ARL-VTF test sets and their average; here "site0" and "site1"
are the face world's two institutions (two thermal sensors, each split into 4 clients by Dirichlet(0.3)),
and the unprefixed columns average both. Local Only is shown for one client of each institution (C1, C5:
their models on both sites' test sets), Fused is the mean output of the 8 local models. PSNR columns come
from the method's own evaluation; Rank-1 / identity cosine from the independent recognizer, where the
run's evaluate rows have them (the models that make one image per input).
Budget: the smoke variant (16² → 64², 8 clients × 40 steps of batch 4, P = 10 local steps per round).
"""

from configs.tables.vpgan_table5 import PREREQUISITES, WEIGHTS
from hallujax.experiments import Row, Table

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
      ),
      metrics=(*SITES, "rank1", "vr_at_far_1e-2", "identity_cosine"),
      order=("Centralized", "VPFL", "VPFL w/o MPR", "FedProx", "Fused"),
      order_metric="psnr",
  )
