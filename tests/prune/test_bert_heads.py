"""BERT heads pruning: heads go with the same share of hidden width (head size = hidden_size / heads)."""

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from slimlm.cli.main import main
from slimlm.errors import ConfigError
from slimlm.models import Model, load, save
from slimlm.prune import Calibration, parse_structured, prune_, save_kwargs


def _calib() -> Calibration:
    return Calibration(torch.randint(5, 200, (4, 32), generator=torch.Generator().manual_seed(0)))


def _outputs(hf, ids) -> torch.Tensor:
    with torch.inference_mode():
        out = hf(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _bert_with_pooler() -> Model:
    """tiny:bert is a BertModel without a pooler; this one has it (as BERT checkpoints do)."""
    from transformers import BertModel

    tiny = load("tiny:bert")
    torch.manual_seed(0)
    hf = BertModel(tiny.hf.config).eval()
    return Model(hf=hf, tokenizer=tiny.tokenizer, spec="tiny-bert-pooler", provenance={"spec": "tiny-bert-pooler",
                                                                                      "stages": []})


@pytest.mark.parametrize("spec, model_spec, expect", [
    ("heads=0.25,hidden=0.25", "tiny:bert", {"heads": 3, "hidden_size": 48, "head_dim": 16}),
    ("heads=0.25,hidden=0.25", "pooler", {"heads": 3, "hidden_size": 48, "head_dim": 16}),
    ("heads=0.25,hidden=0.25", "tiny:bert?labels=3", {"heads": 3, "hidden_size": 48, "head_dim": 16}),
    ("layers=1,heads=0.5,hidden=0.5,ffn=0.5", "tiny:bert?labels=3",
     {"layers": 3, "heads": 2, "hidden_size": 32, "head_dim": 16, "intermediate_size": 64}),
])
def test_heads_with_hidden_shrink_and_reload_in_plain_transformers(spec, model_spec, expect, tmp_path):
    model = _bert_with_pooler() if model_spec == "pooler" else load(model_spec)
    before = model.num_params()
    cfg = parse_structured(spec)
    calib = _calib()
    report = prune_(model, cfg, calib)
    a = model.adapter
    shape = a.describe()
    for k, v in expect.items():
        assert shape[k] == v, (k, shape)
    assert shape["kv_heads"] == shape["heads"]
    assert report["params_after"] < before
    assert report["hidden"] == {"kept": shape["hidden_size"]}
    assert [len(k) for k in report["heads"]["kept_query_heads"]] == [shape["heads"]] * shape["layers"]
    h, f = shape["hidden_size"], shape["intermediate_size"]
    p, m = a.attention(a.layers()[0]), a.mlp(a.layers()[0])
    for lin in (p.q, p.k, p.v, p.o):
        assert lin.weight.shape == (h, h) and lin.bias.shape == (h,)
    assert m.up.weight.shape == (f, h) and m.down.weight.shape == (h, f)
    emb = a.base().embeddings
    for e in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
        assert e.weight.shape[1] == h
    assert emb.LayerNorm.weight.shape == (h,) and all(n.weight.shape == (h,) for n in a.norms(a.layers()[0]))
    pooler = a.base().pooler
    if pooler is not None:
        assert pooler.dense.weight.shape == (h, h) and pooler.dense.bias.shape == (h,)
    if a.classifier() is not None:
        assert a.classifier().weight.shape == (3, h)
    save(model, tmp_path / "b", **save_kwargs(cfg, report, model))
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (config["num_attention_heads"], config["hidden_size"]) == (shape["heads"], h)
    if a.classifier() is not None:  # no slimlm involved from here
        plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b")
    else:
        plain = AutoModel.from_pretrained(tmp_path / "b", add_pooling_layer=pooler is not None)
    plain.eval()
    assert plain.num_parameters() == model.num_params()
    ids = calib.tokens[:2]
    torch.testing.assert_close(_outputs(plain, ids), _outputs(model.hf, ids), rtol=1e-5, atol=1e-5)
    if pooler is not None and a.classifier() is None:
        with torch.inference_mode():
            torch.testing.assert_close(plain(input_ids=ids).pooler_output, model.hf(input_ids=ids).pooler_output,
                                       rtol=1e-5, atol=1e-5)


def test_importance_removes_the_dead_head_and_the_dead_hidden_channels():
    model = load("tiny:bert")
    a = model.adapter
    hd, dead_head = a.head_dim, 2
    dead = torch.arange(0, 64, 4)  # 16 channels, one head's width
    keep = torch.tensor([c for c in range(64) if c not in set(dead.tolist())])
    rows = torch.arange(dead_head * hd, (dead_head + 1) * hd)
    with torch.no_grad():
        for layer in a.layers():  # head 2 attends uniformly to zero values: its output is 0
            p = a.attention(layer)
            for lin in (p.q, p.k, p.v):
                lin.weight[rows] = 0
                lin.bias[rows] = 0
        for norm in [a.base().embeddings.LayerNorm] + [n for layer in a.layers() for n in a.norms(layer)]:
            norm.weight[dead] = 0  # these channels of the residual stream are 0 everywhere
            norm.bias[dead] = 0
    word = a.embeddings().weight.detach().clone()
    q = a.attention(a.layers()[1]).q.weight.detach().clone()
    report = prune_(model, parse_structured("heads=0.25,hidden=0.25"), _calib())
    assert report["heads"]["kept_query_heads"] == [[0, 1, 3]] * 4
    new = model.adapter
    torch.testing.assert_close(new.embeddings().weight, word[:, keep])
    kept_rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in (0, 1, 3)])
    torch.testing.assert_close(new.attention(new.layers()[1]).q.weight, q[kept_rows][:, keep])


@pytest.mark.parametrize("spec, match", [
    ("heads=0.25", r"^give hidden=0.25 too \(BERT's head size is hidden_size/num_attention_heads\): "
                   r"heads=0.25,hidden=0.25$"),
    ("heads=0.3,hidden=0.3", r"4 query heads .*valid ratios: whole KV groups \(head_mode=groups\): 0.25, 0.5, 0.75\.$"),
    ("hidden=0.25", r"give heads=R,hidden=R with R one of 0.25, 0.5, 0.75\.$"),
    ("heads=0.25,hidden=0.5", r"remove the width of the 1 heads .*give heads=0.25,hidden=0.25\.$"),
])
def test_invalid_bert_width_fails_before_any_work(spec, match):
    model = load("tiny:bert")
    h = model.hash
    with pytest.raises(ConfigError, match=match):
        prune_(model, parse_structured(spec), _calib())
    assert model.rehash() == h


def test_cli_passes_heads_and_hidden_through(data, tmp_path, capsys):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(data[0][:10]))
    code = main(["prune", "tiny:bert?labels=3", "--out", str(tmp_path / "b"), "--data", str(corpus),
                 "--structured", "heads=0.25,hidden=0.25", "--calib-samples", "4", "--calib-seq-len", "32", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["shape_after"]["heads"], res["shape_after"]["hidden_size"]) == (3, 48)
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "b").config.hidden_size == 48
