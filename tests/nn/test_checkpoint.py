"""One checkpoint reader: state dicts (nn) and training checkpoints (engine) refuse bad files alike."""
from __future__ import annotations

import fractions

import pytest
import torch

from bev_ddp.engine.checkpoint import load_checkpoint, load_model_weights
from bev_ddp.errors import InputError
from bev_ddp.nn.checkpoint import load_weights, read_checkpoint, read_state_dict


def _bad_files(tmp_path):
    """``{name: (path, expected message fragment)}``: missing, empty, foreign (a pickled object), truncated."""
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": fractions.Fraction(1, 3)}, foreign)  # a class the safe loader refuses
    corrupt = tmp_path / "corrupt.pth"
    torch.save(torch.nn.Linear(2, 3).state_dict(), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated mid-archive
    return {
        "missing": (tmp_path / "none.pth", "checkpoint not found: "),
        "empty": (empty, "is empty (0 bytes)"),
        "foreign": (foreign, "not a plain tensor checkpoint (the safe loader refused it: "),
        "corrupt": (corrupt, "could not be read (corrupt or truncated?)"),
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign", "corrupt"])
def test_state_dict_and_training_readers_give_the_same_one_line_message(tmp_path, kind):
    path, fragment = _bad_files(tmp_path)[kind]
    model = torch.nn.Linear(2, 3)
    messages = []
    for read in (read_checkpoint, read_state_dict, lambda p: load_weights(model, p), load_checkpoint,
                 lambda p: load_model_weights(model, p)):
        with pytest.raises(InputError) as info:
            read(path)
        messages.append(str(info.value))
    assert len(set(messages)) == 1, messages
    assert fragment in messages[0] and str(path) in messages[0] and "\n" not in messages[0]
    assert "weights_only" not in messages[0]


def test_a_plain_state_dict_reads_back_bit_for_bit(tmp_path):
    state = torch.nn.Linear(2, 3).state_dict()
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state}, path)
    back = read_state_dict(path)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)
