"""`trl_gta.checkpoint`: the one reader and writer of a checkpoint's `gta_config.json`."""

import json

import pytest

from trl_gta.checkpoint import GTA_CONFIG_FILE, GTACheckpointMetadata
from trl_gta.prompts import GTAPromptTemplate


def test_round_trip(tmp_path):
    template = GTAPromptTemplate(response_prefix="<guess>", chat_template_kwargs={"enable_thinking": False})
    saved = GTACheckpointMetadata(["a", "b"], template, max_completion_length=256, settings={"beta": 0.01})
    path = saved.save(str(tmp_path))
    assert path.endswith(GTA_CONFIG_FILE) and not list(tmp_path.glob("*.tmp"))
    loaded = GTACheckpointMetadata.load(str(tmp_path))
    assert loaded.labels == ["a", "b"] and loaded.prompt_template == template
    assert loaded.max_completion_length == 256 and loaded.settings == {"beta": 0.01}
    assert "trl" in loaded.versions  # recorded at save time


def test_reads_the_flat_layout_of_earlier_checkpoints(tmp_path):
    flat = {"labels": ["a", "b"], "prompt_template": {"response_prefix": "<guess>"}, "beta": 0.0, "sft_weight": 1.0}
    (tmp_path / GTA_CONFIG_FILE).write_text(json.dumps(flat))
    loaded = GTACheckpointMetadata.load(str(tmp_path))
    assert loaded.prompt_template.response_prefix == "<guess>"
    assert loaded.settings == {"beta": 0.0, "sft_weight": 1.0} and loaded.max_completion_length is None


def test_missing_file_is_a_plain_model_and_bad_files_name_themselves(tmp_path):
    assert GTACheckpointMetadata.load(str(tmp_path)) is None
    (tmp_path / GTA_CONFIG_FILE).write_text(json.dumps({"labels": ["a", "A."]}))
    with pytest.raises(ValueError, match=r"gta_config\.json is not a valid .*normalise to the same string"):
        GTACheckpointMetadata.load(str(tmp_path))
    (tmp_path / GTA_CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="gta_config.json"):
        GTACheckpointMetadata.load(str(tmp_path))
