import asyncio
import dataclasses
import json
import time

import httpx
import keras
import pytest

import zoo
from serving import model as serving_model
from live_server import live_server
from serving.app import LIMITS, create_app
from training.export import export_model

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
MAX_LENGTH, MAX_SAMPLES = 500, 4


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    # Seeded: a beam of 4 usually, not always, beats greedy decoding; with unseeded weights
    # the beam-search test failed in CI once.
    keras.utils.set_random_seed(0)
    lstm = zoo.presets.build("lstm", vocabulary_size=27, units=16)
    export_model(lstm, ALPHABET, {"preset": "lstm", "normalize": "text8", "test_bpc": 4.5}, root, "tiny",
                 xla=False)
    arch1 = zoo.presets.build("arch1", vocabulary_size=27, units=8)
    export_model(arch1, ALPHABET, {"preset": "arch1", "normalize": None}, root, "strict", xla=False)
    (root / "tiny" / ".export-half-written").mkdir()  # must be ignored
    return root


@pytest.fixture(scope="module")
def server(models_dir):
    limits = dataclasses.replace(LIMITS, max_length=MAX_LENGTH, max_samples=MAX_SAMPLES)
    app = create_app(models_dir, limits=limits, rescan_interval=0.2)
    with live_server(app) as url:
        yield {"app": app, "url": url, "models_dir": models_dir}


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server["url"], timeout=60) as client:
        yield client


def post(client, name="tiny", **body):
    return client.post(f"/v1/models/{name}:sample", json=body)


def test_health_and_listing(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models"] == 2
    assert health["states"] == {"strict": {"state": "serving", "version": 1, "graph_of": 1, "failed": {}},
                                "tiny": {"state": "serving", "version": 1, "graph_of": 1, "failed": {}}}
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"tiny", "strict"}
    assert models["tiny"]["family"] == "lstm" and models["tiny"]["alphabet"] == ALPHABET
    assert models["tiny"]["metrics"]["test_bpc"] == 4.5
    assert client.get("/v1/models/strict").json()["family"] == "arch1"
    assert client.get("/v1/models/nope").status_code == 404
    assert post(client, "nope", prime="a").status_code == 404
    assert "/v1/models/{name}:sample" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_sample_is_reproducible_and_matches_the_export(client, server):
    response = post(client, prime="the ", length=30, num_samples=3, temperature=0.9, top_k=5)
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "tiny" and body["version"] == 1 and body["elapsed_ms"] > 0
    assert len(body["samples"]) == 3 and all(len(s) == 30 for s in body["samples"])
    again = post(client, prime="the ", length=30, num_samples=3, temperature=0.9, top_k=5, seed=body["seed"])
    assert again.json()["samples"] == body["samples"]
    direct, _ = serving_model.sample(server["models_dir"] / "tiny", "the ", 30, 0.9, 5, 1.0, body["seed"], 3)
    assert direct == body["samples"]


def test_text8_normalisation_and_strict_alphabets(client):
    assert post(client, prime="Hello, World 42!", length=5).status_code == 200
    response = post(client, "strict", prime="Hello, World!", length=5)
    assert response.status_code == 422
    assert "prime" in response.json()["detail"][0]["loc"] and "H" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("body, field", [
    ({"length": -1}, "length"),
    ({"length": MAX_LENGTH + 1}, "length"),
    ({"length": "ten"}, "length"),
    ({"temperature": -0.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"num_samples": MAX_SAMPLES + 1}, "num_samples"),
    ({"num_samples": 0}, "num_samples"),
    ({"prime": 5}, "prime"),
    ({"seed": -1}, "seed"),
    ({"lenght": 5}, "lenght"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["a"] * 9}, "stop"),
    ({"stop": 3}, "stop"),
    ({"beam_width": 0}, "beam_width"),
    ({"beam_width": 17}, "beam_width"),
    ({"beam_width": 2, "num_samples": 3}, "num_samples"),
    ({"beam_width": 2, "stream": True}, "stream"),
])
def test_bad_input_is_422_naming_the_field(client, body, field):
    response = post(client, prime="a", **{"length": 5, **body}) if "prime" not in body else post(client, **body)
    assert response.status_code == 422
    assert any(field in detail["loc"] for detail in response.json()["detail"])


def test_malformed_json_is_422(client):
    response = client.post("/v1/models/tiny:sample", content=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422


def read_events(response):
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_stream_sends_chunks_that_join_to_the_sample(client):
    settings = {"prime": "a cat", "length": 70, "num_samples": 2, "seed": 11}
    response = post(client, stream=True, **settings)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response)
    chunks = [data["samples"] for event, data in events if event == "chunk"]
    assert len(chunks) == 5 and events[-1][0] == "done"
    joined = ["".join(parts) for parts in zip(*chunks)]
    assert joined == events[-1][1]["samples"] == post(client, **settings).json()["samples"]
    assert post(client, stream=True, prime="a", length=0).text.count("event: chunk") == 0
    assert post(client, "strict", stream=True, prime="A").status_code == 422


def test_stream_stops_when_the_client_leaves(server, client):
    model = server["app"].state.repository.get("tiny")
    produced = []
    original = model.chunks

    def slow_chunks(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            produced.append(chunk)
            time.sleep(0.02)
            yield chunk

    model.chunks = slow_chunks
    try:
        with client.stream("POST", "/v1/models/tiny:sample",
                           json={"prime": "a", "length": MAX_LENGTH, "stream": True}) as response:
            next(response.iter_lines())
        time.sleep(0.5)
        stopped_at = len(produced)
        time.sleep(0.3)
        assert 0 < len(produced) == stopped_at < MAX_LENGTH // 16
    finally:
        del model.chunks


def test_concurrent_requests_are_batched_and_a_new_version_is_picked_up(server, client):
    model = server["app"].state.repository.get("tiny")
    calls = []
    original = model.chunks
    model.chunks = lambda *args, **kw: calls.append(len(args[0])) or original(*args, **kw)

    async def many():
        async with httpx.AsyncClient(base_url=server["url"], timeout=60) as session:
            return await asyncio.gather(*[
                session.post("/v1/models/tiny:sample", json={"prime": "the", "length": 40, "seed": i})
                for i in range(32)
            ])

    responses = asyncio.run(many())
    assert [r.status_code for r in responses] == [200] * 32
    assert len(calls) < 32 and sum(calls) == 32
    for i in (0, 17, 31):  # merged rows draw exactly what they draw alone
        assert responses[i].json()["samples"] == model.sample("the", 40, seed=i)

    fresh = zoo.presets.build("lstm", vocabulary_size=27, units=16)
    export_model(fresh, ALPHABET, {"preset": "lstm", "normalize": "text8"}, server["models_dir"], "tiny",
                 xla=False)
    deadline = time.monotonic() + 30
    while client.get("/v1/models/tiny").json()["version"] != 2:
        assert time.monotonic() < deadline, "version 2 was not picked up"
        time.sleep(0.2)
    assert post(client, prime="the", length=5).json()["version"] == 2


def test_sampler_finds_the_newest_version_and_reports_user_errors(models_dir, tmp_path):
    model = serving_model.ExportedModel(models_dir / "strict")
    assert model.version == 1 and model.sample("abc", 10, temperature=0) == model.sample("abc", 10, temperature=0)
    with pytest.raises(ValueError, match="neither an exported model"):
        serving_model.ExportedModel(tmp_path)
    with pytest.raises(ValueError, match="outside the model's alphabet: '!'"):
        model.sample("abc!")
    with pytest.raises(ValueError, match="top_p"):
        model.sample("abc", top_p=0)


def test_the_bench_load_generator_counts_answers_and_errors(server):
    from benchmarks import loadgen

    port = int(server["url"].rsplit(":", 1)[1])
    latencies, errors, wall = asyncio.run(loadgen.requests(port, "/v1/models/tiny:sample", 4, 2, 5))
    assert len(latencies) == 8 and errors == 0 and 0 < max(latencies) <= wall
    latencies, errors, _ = asyncio.run(loadgen.requests(port, "/v1/models/nope:sample", 2, 2, 5))
    assert latencies == [] and errors == 4


def test_samples_end_at_stop_strings_alike_in_plain_and_streamed_answers(client):
    free = post(client, prime="the ", length=400, num_samples=3, seed=8).json()["samples"]
    for include in (False, True):
        settings = {"prime": "the ", "length": 400, "num_samples": 3, "seed": 8, "stop": ["e", "qq"],
                    "include_stop": include}
        plain = post(client, **settings).json()["samples"]
        assert plain == [text[: text.index("e") + include] for text in free]  # "qq" does not come first
        events = read_events(post(client, stream=True, **settings))
        joined = ["".join(p) for p in zip(*[d["samples"] for e, d in events if e == "chunk"])]
        assert joined == plain == events[-1][1]["samples"]
    assert post(client, prime="x", length=30, seed=1, stop="zzzz").json()["samples"][0] == \
        post(client, prime="x", length=30, seed=1).json()["samples"][0]


def test_beam_search_answers_the_most_likely_continuations(client):
    # The strict model: text8 normalisation would merge the spaces an untrained model likes.
    body = post(client, "strict", prime="the ", length=12, beam_width=4, num_samples=2).json()
    assert len(body["samples"]) == 2 and body["bits"][0] <= body["bits"][1]
    greedy = post(client, "strict", prime="the ", length=12, temperature=0).json()["samples"][0]
    scored = [score(client, "the " + text, "strict")["bits"] - score(client, "the ", "strict")["bits"]
              for text in (body["samples"][0], greedy)]
    assert scored[0] == pytest.approx(body["bits"][0], rel=1e-3) and scored[0] <= scored[1] + 1e-3


def score(client, text, name="tiny"):
    response = client.post(f"/v1/models/{name}:score", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()


def test_score_answers_the_surprisal_of_each_character(client, server):
    body = score(client, "Hello, World!")
    assert body["text"] == "hello world " and body["characters"] == 12 == len(body["surprisal"])
    assert body["bits"] == pytest.approx(sum(body["surprisal"]), abs=1e-2)
    assert body["bpc"] == pytest.approx(body["bits"] / 12)
    direct = serving_model.ExportedModel(server["models_dir"] / "tiny").score("Hello, World!")
    assert direct["surprisal"] == body["surprisal"]
    assert client.get("/v1/models/tiny").json()["can_score"] is True


@pytest.mark.parametrize("name, body, status, says", [
    ("strict", {"text": "Hello"}, 422, "outside the model's alphabet"),
    ("tiny", {"text": ",,"}, 200, ""),  # one space
    ("tiny", {"text": ""}, 422, "no characters"),
    ("tiny", {"text": "a" * (LIMITS.max_text + 1)}, 422, f"at most {LIMITS.max_text}"),
    ("tiny", {"text": "a" * 70_000}, 413, ""),  # over the body limit
    ("tiny", {"text": 5}, 422, "string"),
    ("tiny", {"txt": "a"}, 422, ""),
    ("nope", {"text": "a"}, 404, "no model"),
])
def test_bad_score_requests_fail_alone_and_clearly(client, name, body, status, says):
    response = client.post(f"/v1/models/{name}:score", json=body)
    assert response.status_code == status and says in response.text
