"""GPT.from_pretrained on a directory whose config.json is not a GPT-2 config: one ValueError naming the file."""

import pytest

from tinytorch.models import GPT


@pytest.mark.parametrize("text, expected", [
    ("{bad", "is not valid JSON (line 1 column 2"),
    ("[1, 2]", "holds a list, not a JSON object"),
    ("{}", "lacks vocab_size, n_positions, n_embd, n_layer, n_head"),
    ('{"vocab_size": 50, "n_positions": 16, "n_embd": 32, "n_layer": 2}', "lacks n_head"),
])
def test_a_bad_config_json_is_a_value_error_naming_the_file(tmp_path, text, expected):
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the config is checked first
    with pytest.raises(ValueError) as err:
        GPT.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value) and expected in str(err.value), str(err.value)


def test_config_from_hf_names_the_missing_keys():
    from tinytorch.models import config_from_hf

    with pytest.raises(ValueError, match="this GPT-2 config lacks n_positions, n_head: the model's shape is unknown"):
        config_from_hf({"vocab_size": 50, "n_embd": 32, "n_layer": 2})
