"""The engine and app in-process: generation against plain HF, a classifier served from a variant directory."""

import torch
from fastapi.testclient import TestClient

from slimlm.models import load, save
from slimlm.serve import ServeSettings, build_app
from slimlm.serve.engine import Engine


def test_greedy_generation_matches_hf_generate():
    m = load("tiny:llama")
    eng = Engine(m, "tiny")
    ids = eng.encode("Shall I compare thee")
    pieces = []
    g = eng.generate(ids, max_tokens=12, temperature=0, on_text=pieces.append)
    ref = m.hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                        pad_token_id=m.tokenizer.pad_token_id)[0, len(ids):].tolist()
    assert g.tokens == ref[: len(g.tokens)] and len(g.tokens) >= 1
    assert "".join(pieces) == g.text and g.prompt_tokens == len(ids) and g.ttft_s is not None


def test_stop_string_is_cut_and_never_streamed():
    eng = Engine(load("tiny:llama"), "tiny")
    ids = eng.encode("ab")
    full = eng.generate(ids, max_tokens=20, temperature=0).text
    stop = full[3:5]
    pieces = []
    g = eng.generate(ids, max_tokens=20, temperature=0, stop=[stop], on_text=pieces.append)
    assert g.finish_reason == "stop" and g.text == full[: full.find(stop)] and "".join(pieces) == g.text


def test_a_classifier_variant_directory_serves_classify(tmp_path):
    d = tmp_path / "clf"
    save(load("tiny:bert?labels=3"), d)
    app, state = build_app(d, ServeSettings(canary_interval_s=0, shadow_ratio=0))
    with TestClient(app) as c:
        r = c.post("/v1/classify", json={"input": ["to be or not to be", "a horse"]})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert [x["index"] for x in data] == [0, 1]
        assert all(len(x["probs"]) == 3 and abs(sum(x["probs"]) - 1) < 1e-3 for x in data)
        assert c.post("/v1/completions", json={"prompt": "x"}).json()["error"]["code"] == "wrong_task"
        assert c.post("/v1/classify", json={"input": []}).status_code == 400
        assert c.post("/v1/classify", json={"input": ["x"] * 65}).json()["error"]["message"].startswith("input has 65")
        assert c.get("/v1/models").json()["data"][0]["task"] == "classification"
        assert c.post("/admin/decision", json={}).status_code == 404  # no token: the endpoint does not exist


def test_chat_goes_through_the_tokenizers_template():
    m = load("tiny:llama")
    m.tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    eng = Engine(m, "tiny")
    ids = eng.chat_ids([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    text = m.tokenizer.decode(ids)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
