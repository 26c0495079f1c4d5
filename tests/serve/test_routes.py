"""A real `slimlm serve` process: the OpenAI-compatible routes, refusals with clear 4xx, and /metrics."""

import json

import pytest


def test_models_health_and_completions(server, run):
    models = server.get("/v1/models").json()["data"]
    assert models[0]["id"] == run["good"] and models[0]["task"] == "causal-lm"
    r = server.post("/v1/completions", json={"prompt": "Shall I compare", "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == run["good"]
    assert body["usage"]["prompt_tokens"] == len("Shall I compare")  # byte-level tokenizer: one token per byte
    assert body["usage"]["completion_tokens"] <= 6 and body["choices"][0]["finish_reason"] in ("length", "stop")
    assert body["system_fingerprint"].startswith("decision-")


def test_chat_uses_the_template_and_stream_matches_the_plain_answer(server):
    req = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0}
    plain = server.post("/v1/chat/completions", json=req).json()
    assert plain["object"] == "chat.completion" and plain["choices"][0]["message"]["role"] == "assistant"
    assert plain["usage"]["prompt_tokens"] > len("Hello")  # role markers added by the template
    r = server.post("/v1/chat/completions", json={**req, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]  # greedy: the same tokens either way
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


def test_stop_strings_and_sampling_parameters(server):
    r = server.post("/v1/completions", json={"prompt": "ab", "max_tokens": 30, "temperature": 0.8, "top_p": 0.9,
                                             "seed": 7, "stop": ["e", "a"]}).json()
    assert "e" not in r["choices"][0]["text"] and "a" not in r["choices"][0]["text"]
    again = server.post("/v1/completions", json={"prompt": "ab", "max_tokens": 30, "temperature": 0.8, "top_p": 0.9,
                                                 "seed": 7, "stop": ["e", "a"]}).json()
    assert again["choices"][0]["text"] == r["choices"][0]["text"]  # same seed, same sample


BAD = [  # (body bytes, status, error code, words the message must contain)
    (b"{not json", 400, "invalid_json", "not valid JSON"),
    (json.dumps({"prompt": 3}).encode(), 400, "invalid_request", "'prompt'"),
    (json.dumps({"prompt": "x", "max_tokens": "ten"}).encode(), 400, "invalid_request", "'max_tokens'"),
    (json.dumps({"prompt": "x", "temperature": 9}).encode(), 400, "invalid_request", "'temperature'"),
    (json.dumps({"max_tokens": 5}).encode(), 400, "invalid_request", "'prompt' is required"),
    (json.dumps([1, 2]).encode(), 400, "invalid_request", "JSON object"),
    (json.dumps({"prompt": "x", "max_tokens": 65}).encode(), 400, "max_tokens_over_cap", "cap of 64"),
    (json.dumps({"prompt": "x" * 1020, "max_tokens": 10}).encode(), 400, "context_length_exceeded", "context of 1024"),
    (json.dumps({"prompt": "x" * 70000}).encode(), 413, "body_too_large", "65536 bytes"),
]


@pytest.mark.parametrize("body,status,code,words", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, body, status, code, words):
    r = server.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"], err
    ok = server.post("/v1/completions", json={"prompt": "still here", "max_tokens": 2})
    assert ok.status_code == 200


def test_other_refusals(server):
    assert server.post("/v1/classify", json={"input": "x"}).json()["error"]["code"] == "wrong_task"
    r = server.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and "messages.0.role" in r.json()["error"]["message"]
    assert server.get("/nope").status_code == 404
    assert server.post("/admin/decision", json={"decision": 1}).status_code == 401  # token required


def test_metrics_publish_traffic_and_the_operating_point(server, run):
    server.post("/v1/completions", json={"prompt": "count me", "max_tokens": 3})
    text = server.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, val = line.rpartition(" ")
            values[name] = float(val)
    assert values['slimlm_requests_total{code="200",route="/v1/completions"}'] >= 1
    assert values["slimlm_prompt_tokens_total"] >= len("count me")
    assert values["slimlm_generated_tokens_total"] >= 1
    assert 'slimlm_request_duration_seconds_bucket{le="0.005",route="/v1/completions"}' in values
    assert any(k.startswith("slimlm_time_to_first_token_seconds_bucket") for k in values)
    assert values["slimlm_quality_drop_bound_ratio"] == pytest.approx(0.03)
    assert values["slimlm_cost_forecast_usd_per_1k_requests"] == pytest.approx(1000 * 0.184 / 3600 * 0.10)
    assert values["slimlm_cost_usd_per_1k_requests"] > 0 and values["slimlm_co2e_grams_per_request"] > 0
    assert values['slimlm_latency_slo_seconds{quantile="0.99"}'] == pytest.approx(4 * 0.184)
    info = next(k for k in values if k.startswith("slimlm_operating_point_info"))
    assert f'variant="{run["good"]}"' in info and 'tier="medium"' in info and 'recipe="int8-dynamic"' in info
    assert "slimlm_requests_in_flight" in values


def test_canary_and_shadow_measure_the_served_model(server):
    import time

    for i in range(3):
        server.post("/v1/completions", json={"prompt": f"shadow me {i}", "max_tokens": 4})
    end = time.time() + 60
    while True:
        h = server.get("/healthz").json()
        if h["shadow_scored"] >= 3 and h["canary"].get("drop") is not None:
            break
        assert time.time() < end, h
        time.sleep(0.3)
    canary = h["canary"]
    assert canary["reference_from"] == "teacher" and canary["reference"] > 1  # teacher measured on the same sample
    assert abs(canary["drop"]) < 0.03  # the good int8 variant stays inside its tier
    text = server.get("/metrics").text
    top1 = float(text.split("\nslimlm_shadow_top1_agreement_ratio ")[1].split()[0])
    kl = float(text.split("\nslimlm_shadow_kl_divergence ")[1].split()[0])
    assert 0.9 <= top1 <= 1.0 and 0 <= kl < 0.05  # int8 agrees with its teacher on live requests
