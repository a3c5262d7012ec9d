"""Zero-shot protocol pieces: class names, prompt ensembles, single/multi-label, folds."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError, InputError
from audiocl.eval.zeroshot import (
    class_embeddings,
    class_name,
    read_prompts_file,
    resolve_prompts,
    zeroshot_metrics,
)


def test_class_name_and_prompt_resolution(tmp_path):
    assert class_name("chirping_birds") == "chirping birds"
    assert class_name("Hip_hop__music") == "Hip hop music"
    assert resolve_prompts(None, None, ["A {} song."]) == ["A {} song."]
    assert resolve_prompts("x {}", None, ["A {} song."]) == ["x {}"]
    assert resolve_prompts(None, None, None) == ["This is a sound of {}."]
    f = tmp_path / "p.txt"
    f.write_text("# comment\nthe sound of {}\n\na {} noise\n")
    assert read_prompts_file(f) == ["the sound of {}", "a {} noise"]
    j = tmp_path / "p.json"
    j.write_text(json.dumps(["{} sound", "{} again"]))
    assert resolve_prompts(None, j, None) == ["{} sound", "{} again"]
    bad = tmp_path / "bad.txt"
    bad.write_text("fine {}\nno placeholder\n")
    with pytest.raises(InputError) as e:
        read_prompts_file(bad)
    assert e.value.line == 2
    with pytest.raises(AudioclError):
        resolve_prompts("a", "b", None)
    with pytest.raises(AudioclError):
        resolve_prompts("two {} {}", None, None)


def test_prompt_ensemble_is_mean_of_normalised_then_renormalised():
    table = {
        "a dog": torch.tensor([3.0, 0.0, 0.0]),
        "the dog": torch.tensor([0.0, 1.0, 0.0]),
        "a cat": torch.tensor([0.0, 0.0, 2.0]),
        "the cat": torch.tensor([0.0, 0.0, 5.0]),
    }
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return torch.stack([table[t] for t in texts])

    c = class_embeddings(embed, ["dog", "cat"], ["a {}", "the {}"])
    assert seen == [["a dog", "a cat"], ["the dog", "the cat"]]
    # dog: mean of unit (1,0,0) and (0,1,0) -> (1,1,0)/sqrt2; cat: (0,0,1)
    assert torch.allclose(c, torch.tensor([[2**-0.5, 2**-0.5, 0.0], [0.0, 0.0, 1.0]]))
    one = class_embeddings(embed, ["dog"], ["a {}"])
    assert torch.allclose(one, torch.tensor([[1.0, 0.0, 0.0]]))


def test_single_label_metrics_hand_case_and_folds():
    classes = ["cat", "dog", "rain"]
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # cat -> cat
            [0.2, 0.7, 0.1],  # dog -> dog
            [0.6, 0.3, 0.1],  # rain -> cat (rank 3)
            [0.1, 0.5, 0.4],  # rain -> dog (rank 2)
        ]
    )
    labels = [["cat"], ["dog"], ["rain"], ["rain"]]
    res = zeroshot_metrics(scores, labels, classes, folds=[1, 1, 2, 2])
    assert res["top1"] == 0.5 and res["top5"] == 1.0 and res["top5_k"] == 3
    assert res["n_items"] == 4 and res["n_classes"] == 3
    assert res["per_class"] == {
        "cat": {"accuracy": 1.0, "n": 1},
        "dog": {"accuracy": 1.0, "n": 1},
        "rain": {"accuracy": 0.0, "n": 2},
    }
    assert res["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert res["folds"]["1"]["top1"] == 1.0 and res["folds"]["2"]["top1"] == 0.0
    assert res["fold_mean"]["top1"] == 0.5 and res["fold_std"]["top1"] == 0.5
    with pytest.raises(AudioclError, match="not in the class list"):
        zeroshot_metrics(scores, [["cat"], ["dog"], ["rain"], ["owl"]], classes)
    with pytest.raises(AudioclError, match="no label"):
        zeroshot_metrics(scores, [["cat"], ["dog"], ["rain"], []], classes)


def test_multi_label_gets_map():
    classes = ["a", "b", "c"]
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9], [0.5, 0.1, 0.4]])
    labels = [["a", "b"], ["c"], ["c"]]
    res = zeroshot_metrics(scores, labels, classes)
    assert res["task"] == "multi-label"
    # AP(a): only item0 positive, ranked 1st by 0.9 -> 1; AP(b): item0 at 0.8 -> 1
    # AP(c): items 1 (0.9, rank 1) and 2 (0.4, rank 2) -> 1
    assert res["mAP"] == pytest.approx(1.0)
    assert res["per_class"]["a"] == {"AP": 1.0, "n_positive": 1}
    # top1: best class of item 2 is 'a' (not its label)
    assert res["top1"] == pytest.approx(2 / 3)
    scores2 = scores.clone()
    scores2[2] = torch.tensor([0.95, 0.1, 0.4])  # item2 now outscores item0 on class a
    res2 = zeroshot_metrics(scores2, labels, classes)
    assert res2["per_class"]["a"]["AP"] == pytest.approx(0.5)


def test_perfect_and_random_zero_shot():
    gen = torch.Generator().manual_seed(5)
    n_cls, n = 10, 3000
    cls = F.normalize(torch.randn(n_cls, 32, generator=gen), dim=1)
    y = torch.randint(0, n_cls, (n,), generator=gen)
    classes = [f"c{i}" for i in range(n_cls)]
    labels = [[classes[i]] for i in y.tolist()]
    perfect = zeroshot_metrics(cls[y] @ cls.T, labels, classes)
    assert perfect["top1"] == 1.0
    rnd = zeroshot_metrics(F.normalize(torch.randn(n, 32, generator=gen), dim=1) @ cls.T, labels, classes)
    # top-1 ~ 1/10, top-5 ~ 5/10; sd <= 0.01 with 3000 items
    assert abs(rnd["top1"] - 0.1) < 0.03
    assert abs(rnd["top5"] - 0.5) < 0.04
