"""Config fields are declared once: a run's saved config.json reads as today's config."""

import json

import pytest

from configs.ipfh import get_config as ipfh_config
from configs.pcfh import get_config as pcfh_config
from hallujax import config_base, run_files


def saved(config) -> dict:
  return json.loads(config.to_json_best_effort())


def test_a_field_declared_after_a_run_was_saved_reads_as_its_declared_default(tmp_path):
  record = saved(ipfh_config("smoke"))
  del record["policy"]["discount"], record["data"]["sites"], record["train"]["profile_steps"]
  record["train"]["steps"] = 7
  (tmp_path / "config.json").write_text(json.dumps(record))
  config = run_files.read_run_config(str(tmp_path))
  assert config.policy.discount == ipfh_config("").policy.discount == 1.0
  assert config.data.sites == 1 and config.train.profile_steps == 0
  assert config.train.steps == 7 and config.data.input_size == ipfh_config("smoke").data.input_size   # kept


@pytest.mark.parametrize("ablation", ["pix2pix", "cyclegan"])
def test_a_baseline_saved_as_a_pcfh_kind_reads_as_its_own_method(ablation):
  record = saved(pcfh_config(f"smoke,ablation={ablation}"))
  record.update(method="pcfh")
  record["model"]["kind"] = ablation   # how the baselines were saved before they were methods
  assert config_base.saved_run_config(record).method == ablation
  record["model"]["kind"] = "pcfh"
  assert config_base.saved_run_config(record).method == "pcfh"



def test_an_optimizer_section_is_not_filled_from_another_variants_optimizer():
  from configs.lightcnn import get_config as lightcnn_config
  record = saved(lightcnn_config("tiny"))   # Adam; the paper's config declares SGD with momentum and steps
  assert "momentum" not in record["optim"]["lightcnn"]
  config = config_base.saved_run_config(record)
  assert config.optim.lightcnn.to_dict() == record["optim"]["lightcnn"]   # the run's Adam, as saved
