"""The studio's REST API, endpoint by endpoint, in process (FastAPI's TestClient): what the page and a curl user
get, results equal to the Python API's for the same seed and settings, and a 4xx naming the problem for every
bad input."""

import base64
import io
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import genforge
from genforge.data.codecs import read_png_params
from genforge.serve.app import create_app
from studiotools import copy_runs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def client(studio_runs, tmp_path_factory):
    root = copy_runs(studio_runs, tmp_path_factory.mktemp("api") / "runs")
    with TestClient(create_app(root, cpu_jobs=1, max_queued=8)) as c:
        c.root = root
        yield c


def finish(client, job: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job['id']}").json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def submit(client, url: str, body: dict) -> dict:
    r = client.post(url, json=body)
    assert r.status_code == 202, r.text
    return finish(client, r.json())


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else json.dumps(detail)


# ---- runs ------------------------------------------------------------------------------------------------
def test_runs_are_listed_and_described_with_their_declared_capabilities(client):
    runs = {r["id"]: r for r in client.get("/api/runs").json()}
    assert set(runs) == {"diff", "gan", "code"}
    assert runs["diff"]["family"] == "diffusion" and runs["diff"]["step"] == 10 and runs["code"]["modality"] == "text"
    diff = client.get("/api/runs/diff").json()
    options = {o["name"]: o for o in diff["capabilities"]["sample"]["settings"]}
    assert options["sampler"]["choices"] == ["ddpm", "ddim", "euler", "heun", "dpmpp_2m"]
    assert {"inpaint", "img2img"} <= set(diff["capabilities"]) and diff["writes"] == ".png"
    assert {"stream", "infill"} <= set(client.get("/api/runs/code").json()["capabilities"])
    assert "variations" in client.get("/api/runs/gan").json()["capabilities"]
    assert diff["refine"] == {"inpaint": "inpaint", "img2img": "img2img", "variations": "sample"}
    assert client.get("/api/runs/gan").json()["refine"] == {"variations": "variations", "interpolate": "encode"}
    assert client.get("/api/runs/code").json()["refine"] == {"continue": "sample", "infill": "infill"}


def test_training_curves_and_sample_grids(client):
    records = client.get("/api/runs/diff/metrics").json()["records"]
    assert records and all("step" in r for r in records) and any(k.endswith("/loss") for k in records[-1])
    later = client.get("/api/runs/diff/metrics", params={"since": records[0]["step"]}).json()["records"]
    assert len(later) == len(records) - 1
    grids = client.get("/api/runs/diff/grids").json()
    assert [g["step"] for g in grids] == [5, 10]
    r = client.get(f"/api/runs/diff/grids/{grids[-1]['file']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "no sample grid" in error(client.get("/api/runs/diff/grids/config.yaml"), 404)


@pytest.mark.parametrize("run_id", ["nope", ".studio", "..", "a b", "x" * 101])
def test_unknown_or_malformed_run_ids_are_404(client, run_id):
    assert client.get(f"/api/runs/{run_id}").status_code == 404
    assert client.post(f"/api/runs/{run_id}/generate", json={}).status_code == 404


# ---- generate ----------------------------------------------------------------------------------------------
def test_generated_images_equal_the_python_apis_and_carry_their_settings(client):
    job = submit(client, "/api/runs/diff/generate", {"seed": 7, "count": 3, "settings": {"steps": 3, "sampler": "euler"}})
    assert job["status"] == "done" and job["result"]["seed"] == 7 and len(job["result"]["items"]) == 3
    expected = genforge.load(client.root / "diff", device="cpu").sample(3, seed=7, steps=3, sampler="euler")
    expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(dtype=__import__("torch").uint8).numpy()
    for index, item_id in enumerate(job["result"]["items"]):
        item = client.get(f"/api/gallery/{item_id}").json()
        assert item["params"]["seed"] == 7 and item["params"]["index"] == index and item["mode"] == "sample"
        data = client.get(f"/api/gallery/{item_id}/file").content
        np.testing.assert_array_equal(pixels(data), expected[index, 0])
        embedded = read_png_params(io.BytesIO(data))
        assert embedded["seed"] == 7 and embedded["steps"] == 3 and embedded["sampler"] == "euler"
        assert embedded["index"] == index and embedded["run"] == "diff"


def test_seed_minus_one_draws_a_seed_that_makes_the_same_images_again(client):
    first = submit(client, "/api/runs/gan/generate", {"seed": -1, "count": 2})
    seed = first["result"]["seed"]
    assert 0 <= seed < 2**31
    again = submit(client, "/api/runs/gan/generate", {"seed": seed, "count": 2})
    a, b = ([client.get(f"/api/gallery/{i}/file").content for i in job["result"]["items"]] for job in (first, again))
    assert [pixels(x).tolist() for x in a] == [pixels(x).tolist() for x in b]


def test_text_streams_piece_by_piece_and_the_pieces_make_the_stored_text(client):
    r = client.post("/api/runs/code/generate", json={"seed": 3, "count": 1, "prompt": "def f1(x):",
                                                      "settings": {"max_new_tokens": 24}})
    assert r.status_code == 202 and r.json()["streaming"] is True
    pieces, item = [], None
    with client.stream("GET", f"/api/jobs/{r.json()['id']}/events") as events:
        kind = None
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "piece":
                pieces.append(json.loads(line[6:]))
            elif line.startswith("data: ") and kind == "item":
                item = json.loads(line[6:])
    assert pieces[0] == "def f1(x):" and len(pieces) >= 2
    text = client.get(f"/api/gallery/{item['id']}/file").content.decode()
    assert text == "".join(pieces) == item["text"]
    assert text == genforge.load(client.root / "code", device="cpu").sample(1, seed=3, prompt="def f1(x):",
                                                                             max_new_tokens=24)[0]


def test_stop_strings_come_once_and_an_event_stream_resumes_after_its_last_event(client):
    assert "once" in error(client.post("/api/runs/code/generate", json={
        "count": 1, "stop": ["a"], "settings": {"stop": "b"}}), 400)
    job = submit(client, "/api/runs/code/generate", {"seed": 0, "count": 1, "settings": {"stop": "\n", "max_new_tokens": 8}})
    assert job["status"] == "done" and "\n" not in client.get(f"/api/gallery/{job['result']['items'][0]}").json()["text"][1:]
    whole = client.get(f"/api/jobs/{job['id']}/events").text
    resumed = client.get(f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": "2"}).text
    assert whole.startswith("id: 1\n") and resumed.startswith("id: 3\n") and whole.endswith(resumed)


def test_the_catalog_lists_families_and_built_in_sources(client):
    catalog = client.get("/api/catalog").json()
    assert {"diffusion", "gan", "vae", "transformer", "vqvae"} <= set(catalog["families"])
    sources = {s["name"]: s for s in catalog["sources"]}
    assert sources["digits"]["modality"] == "image" and sources["breast_cancer"]["modality"] == "table"


def test_settings_are_checked_against_what_the_run_declares(client):
    cases = [
        ("diff", {"settings": {"sampler": "nope"}}, 400, "unknown sampler"),
        ("diff", {"settings": {"steps": 0}}, 400, "steps"),
        ("diff", {"settings": {"steps": "x"}}, 400, "steps must be an integer"),
        ("diff", {"settings": {"temperature": 0.5}}, 400, "does not take temperature"),
        ("diff", {"prompt": "hello"}, 400, "text runs"),
        ("gan", {"settings": {"truncation": 2}}, 400, "truncation"),
        ("code", {"settings": {"top_p": 0}}, 400, "top_p"),
        ("diff", {"count": 0}, 422, "count"),
        ("diff", {"count": 65}, 422, "count"),
        ("diff", {"seed": -2}, 422, "seed"),
        ("diff", {"colour": "red"}, 422, "colour"),
        ("diff", {"parent_id": "0" * 32}, 404, "no gallery item"),
    ]
    for run, body, status, words in cases:
        assert words in error(client.post(f"/api/runs/{run}/generate", json=body), status), (run, body)


# ---- refine ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_item(client) -> dict:
    job = submit(client, "/api/runs/diff/generate", {"seed": 1, "count": 1, "settings": {"steps": 3}})
    return client.get(f"/api/gallery/{job['result']['items'][0]}").json()


def test_inpaint_keeps_the_unmasked_pixels_and_records_its_parent(client, image_item):
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255  # regenerate the left half
    job = submit(client, "/api/runs/diff/refine", {"mode": "inpaint", "input_id": image_item["id"], "mask": png_b64(mask),
                                                    "count": 2, "seed": 5, "settings": {"steps": 3}})
    assert job["status"] == "done", job["error"]
    before = pixels(client.get(f"/api/gallery/{image_item['id']}/file").content)
    for item_id in job["result"]["items"]:
        item = client.get(f"/api/gallery/{item_id}").json()
        assert item["parent_id"] == image_item["id"] and item["mode"] == "inpaint" and item["seed"] == 5
        after = pixels(client.get(f"/api/gallery/{item_id}/file").content)
        np.testing.assert_array_equal(after[:, 4:], before[:, 4:])
        assert read_png_params(io.BytesIO(client.get(f"/api/gallery/{item_id}/file").content))["parent"] == image_item["id"]
    lineage = client.get(f"/api/gallery/{job['result']['items'][0]}/lineage").json()
    assert [a["id"] for a in lineage["ancestors"]] == [image_item["id"]]
    children = client.get(f"/api/gallery/{image_item['id']}/lineage").json()["descendants"]
    assert {c["item"]["id"] for c in children} >= set(job["result"]["items"])


def test_img2img_and_variations_on_a_diffusion_run(client, image_item):
    job = submit(client, "/api/runs/diff/refine", {"mode": "img2img", "input_id": image_item["id"], "strength": 0.0,
                                                    "count": 1, "seed": 2, "settings": {"steps": 3}})
    kept = client.get(f"/api/gallery/{job['result']['items'][0]}/file").content
    np.testing.assert_array_equal(pixels(kept), pixels(client.get(f"/api/gallery/{image_item['id']}/file").content))
    # a family that cannot invert: variations are the same settings with new seeds
    job = submit(client, "/api/runs/diff/refine", {"mode": "variations", "input_id": image_item["id"], "count": 2, "seed": 9})
    items = [client.get(f"/api/gallery/{i}").json() for i in job["result"]["items"]]
    assert all(i["parent_id"] == image_item["id"] and i["mode"] == "variations" and i["seed"] == 9 for i in items)
    assert all(i["params"]["steps"] == 3 for i in items)  # the parent's settings, kept


def test_latent_refinements_on_a_gan_run(client):
    pair = submit(client, "/api/runs/gan/generate", {"seed": 4, "count": 2})["result"]["items"]
    job = submit(client, "/api/runs/gan/refine", {"mode": "interpolate", "input_id": pair[0], "other_id": pair[1],
                                                   "count": 4, "seed": 0, "settings": {"steps": 5, "restarts": 1}})
    assert job["status"] == "done", job["error"]
    assert len(job["result"]["items"]) == 4 and job["progress"]["done"] == job["progress"]["total"] == 5
    job = submit(client, "/api/runs/gan/refine", {"mode": "variations", "input_id": pair[0], "strength": 0.2, "count": 3,
                                                   "seed": 0, "settings": {"steps": 5, "restarts": 1}})
    assert job["status"] == "done" and len(job["result"]["items"]) == 3
    assert "offers attribute" in error(client.post("/api/runs/gan/refine", json={
        "mode": "attribute", "input_id": pair[0], "source": 1, "target": 7}), 400)


def test_uploads_are_decoded_safely_and_refined_like_any_item(client):
    photo = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG")
    r = client.post("/api/runs/diff/uploads", files={"file": ("me.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 201, r.text
    upload = r.json()
    assert upload["mode"] == "upload" and upload["suffix"] == ".png" and upload["params"]["width"] == 16
    mask = np.zeros((16, 16), np.uint8)
    job = submit(client, "/api/runs/diff/refine", {"mode": "inpaint", "input_id": upload["id"], "mask": png_b64(mask),
                                                    "count": 1, "seed": 0, "settings": {"steps": 2}})
    assert job["status"] == "done", job["error"]
    assert "not a PNG, JPEG" in error(client.post("/api/runs/diff/uploads", files={"file": ("x.png", b"hello")}), 400)
    assert "cannot be decoded" in error(client.post("/api/runs/diff/uploads", files={
        "file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40)}), 400)


def test_refine_inputs_are_checked(client, image_item):
    wrong = np.zeros((5, 5), np.uint8)
    cases = [
        ("diff", {"mode": "inpaint", "input_id": image_item["id"]}, 400, "needs a mask"),
        ("diff", {"mode": "inpaint", "input_id": image_item["id"], "mask": png_b64(wrong)}, 400, "5x5"),
        ("diff", {"mode": "inpaint", "input_id": image_item["id"], "mask": "not base64!"}, 400, "base64"),
        ("diff", {"mode": "inpaint", "input_id": image_item["id"], "mask": base64.b64encode(b"text").decode()}, 400, "PNG"),
        ("diff", {"mode": "inpaint"}, 400, "input image"),
        ("diff", {"mode": "img2img", "input_id": "f" * 32}, 404, "no gallery item"),
        ("diff", {"mode": "img2img", "input_id": image_item["id"], "strength": 2}, 400, "strength"),
        ("diff", {"mode": "interpolate", "input_id": image_item["id"]}, 400, "offers interpolate"),
        ("diff", {"mode": "infill", "prefix": "a"}, 400, "text runs"),
        ("code", {"mode": "inpaint", "input_id": image_item["id"]}, 400, "image runs"),
        ("diff", {"mode": "melt"}, 422, "mode"),
        ("diff", {"mode": "inpaint", "input_id": "../../etc/passwd"}, 422, "input_id"),
    ]
    for run, body, status, words in cases:
        assert words in error(client.post(f"/api/runs/{run}/refine", json=body), status), (run, body)


def test_text_continue_and_fill_in_the_middle(client):
    first = submit(client, "/api/runs/code/generate", {"seed": 1, "count": 2, "prompt": "def", "settings": {"max_new_tokens": 8}})
    parent = client.get(f"/api/gallery/{first['result']['items'][0]}").json()
    job = submit(client, "/api/runs/code/refine", {"mode": "continue", "input_id": parent["id"], "count": 1, "seed": 2,
                                                    "settings": {"max_new_tokens": 8}})
    child = client.get(f"/api/gallery/{job['result']['items'][0]}").json()
    assert child["parent_id"] == parent["id"] and child["mode"] == "continue" and child["text"].startswith(parent["text"])
    job = submit(client, "/api/runs/code/refine", {"mode": "infill", "prefix": "def f3(x):\n    return ", "suffix": "\n",
                                                    "seed": 0, "settings": {"max_new_tokens": 6}})
    item = client.get(f"/api/gallery/{job['result']['items'][0]}").json()
    assert item["mode"] == "infill" and item["text"] == "def f3(x):\n    return " + job["result"]["middle"] + "\n"


# ---- gallery ------------------------------------------------------------------------------------------------------
def test_gallery_search_by_run_family_modality_mode_setting_text_and_date(client, image_item):
    everything = client.get("/api/gallery", params={"limit": 500}).json()
    assert everything["total"] == len(everything["items"]) > 0
    by_run = client.get("/api/gallery", params={"run": "code"}).json()["items"]
    assert by_run and all(i["run_id"] == "code" for i in by_run)
    assert all(i["family"] == "gan" for i in client.get("/api/gallery", params={"family": "gan"}).json()["items"])
    assert all(i["modality"] == "text" for i in client.get("/api/gallery", params={"modality": "text"}).json()["items"])
    assert all(i["mode"] == "inpaint" for i in client.get("/api/gallery", params={"mode": "inpaint"}).json()["items"])
    by_setting = client.get("/api/gallery", params={"setting": "sampler=euler"}).json()["items"]
    assert by_setting and all(i["params"]["sampler"] == "euler" for i in by_setting)
    assert client.get("/api/gallery", params={"q": "def f3"}).json()["total"] >= 1
    assert client.get("/api/gallery", params={"since": time.time() + 60}).json()["total"] == 0
    assert client.get("/api/gallery", params={"until": image_item["created_ts"]}).json()["total"] >= 1
    page = client.get("/api/gallery", params={"limit": 2, "offset": 1}).json()["items"]
    assert [i["id"] for i in page] == [i["id"] for i in everything["items"][1:3]]
    assert "key=value" in error(client.get("/api/gallery", params={"setting": "steps"}), 400)
    assert client.get("/api/gallery", params={"limit": 0}).status_code == 422


def test_download_names_the_file_and_delete_removes_file_and_row(client):
    job = submit(client, "/api/runs/gan/generate", {"seed": 11, "count": 1})
    item_id = job["result"]["items"][0]
    r = client.get(f"/api/gallery/{item_id}/file", params={"download": "true"})
    assert "attachment" in r.headers["content-disposition"] and ".png" in r.headers["content-disposition"]
    path = client.root / ".studio" / "items" / f"{item_id}.png"
    assert path.is_file()
    assert client.delete(f"/api/gallery/{item_id}").json() == {"deleted": item_id}
    assert not path.exists()
    for r in (client.get(f"/api/gallery/{item_id}"), client.get(f"/api/gallery/{item_id}/file"),
              client.delete(f"/api/gallery/{item_id}"), client.get(f"/api/gallery/{item_id}/lineage")):
        assert r.status_code == 404


# ---- jobs ------------------------------------------------------------------------------------------------------
def test_jobs_are_listed_and_unknown_ones_are_404(client):
    jobs = client.get("/api/jobs").json()
    assert jobs and {"id", "kind", "status", "position", "progress"} <= set(jobs[0])
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.post("/api/jobs/nope/cancel").status_code == 404
    assert client.get("/api/jobs/nope/events").status_code == 404


def test_a_full_queue_answers_429(studio_runs, tmp_path):
    root = copy_runs(studio_runs, tmp_path / "runs", ("diff",))
    with TestClient(create_app(root, cpu_jobs=1, max_queued=1)) as c:
        body = {"count": 64, "settings": {"steps": 50}}
        answers = [c.post("/api/runs/diff/generate", json=body) for _ in range(4)]
        codes = [a.status_code for a in answers]
        assert codes[:2] == [202, 202] and 429 in codes[2:], codes
        full = next(a for a in answers if a.status_code == 429)
        assert "queue is full" in full.json()["detail"] and full.headers["retry-after"]
        for a in answers:
            if a.status_code == 202:
                c.post(f"/api/jobs/{a.json()['id']}/cancel")
        assert finish(c, answers[0].json())["status"] == "cancelled"


# ---- the page ----------------------------------------------------------------------------------------------------
def test_the_page_and_the_schema_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "genforge studio" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "") and "https://" not in page.text  # no CDN
    schema = client.get("/openapi.json").json()
    assert "/api/runs/{run_id}/generate" in schema["paths"] and "/api/gallery" in schema["paths"]
    assert client.get("/api/health").json()["ok"] is True
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


# ---- train, stop, resume, compare ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_from_the_api_stop_with_a_checkpoint_resume_and_compare(client):
    from studiotools import TINY_TRAIN_SETS

    body = {"name": "fresh", "family": "diffusion", "data": "digits", "steps": 400, "sets": TINY_TRAIN_SETS}
    r = client.post("/api/train", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    deadline = time.monotonic() + 90
    while client.get(f"/api/jobs/{job['id']}").json()["progress"]["done"] < 3:  # steps show while it trains
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "already training" in error(client.post("/api/runs/fresh/resume", json={}), 400)
    client.post(f"/api/jobs/{job['id']}/cancel")
    stopped = finish(client, job, timeout=90)
    assert stopped["status"] == "cancelled" and "checkpoint is saved" in stopped["error"], stopped
    step = genforge.load(client.root / "fresh", device="cpu").run.model_step()
    assert step is not None and 3 <= step < 400 and f"step {step}" in stopped["error"]
    assert client.get("/api/runs/fresh/metrics").json()["records"][-1]["step"] == step

    resumed = submit(client, "/api/runs/fresh/resume", {"steps": step + 2})
    assert resumed["status"] == "done" and resumed["result"]["step"] == step + 2, resumed
    assert "larger total" in error(client.post("/api/runs/fresh/resume", json={"steps": 1}), 400)

    report = submit(client, "/api/compare", {"runs": ["code"], "n_text": 4})  # text: no feature extractor to build
    assert report["status"] == "done", report["error"]
    page = client.get(f"/api/reports/{report['result']['report']}")
    assert page.status_code == 200 and "code" in page.text and "<img" in page.text  # its training curves
    assert client.get(f"/api/reports/{'0' * 32}").status_code == 404


def test_training_requests_are_checked_before_anything_starts(client):
    base = {"name": "new", "family": "diffusion", "data": "digits", "steps": 5}
    cases = [
        ({**base, "name": "diff"}, 400, "exists already"),
        ({**base, "family": "wizard"}, 400, "wizard"),
        ({**base, "data": "nothing-like-it"}, 400, "unknown data source"),
        ({**base, "data": "folder:/etc"}, 400, "--data-dir"),
        ({**base, "sets": ["model.no_such=1"]}, 400, "no_such"),
        ({**base, "name": "../escape"}, 422, "name"),
        ({**base, "steps": 0}, 422, "steps"),
        ({"runs": []}, 422, "name"),
    ]
    for body, status, words in cases:
        assert words in error(client.post("/api/train", json=body), status), body
    assert "1 to 8 distinct" in error(client.post("/api/compare", json={"runs": ["diff", "diff"]}), 400)
    assert client.post("/api/compare", json={"runs": ["missing"]}).status_code == 404
    assert not (client.root / "new").exists()


def test_a_table_run_writes_its_rows_as_one_csv_item_and_takes_where(tmp_path):
    from tabletools import TINY_TABLE_VAE, patients_csv

    root = tmp_path / "runs"
    genforge.train("vae", f"csv:{patients_csv(tmp_path)}", root / "patients", steps=5, batch_size=64, progress=False,
                   overrides=TINY_TABLE_VAE)
    with TestClient(create_app(root, cpu_jobs=1)) as c:
        options = {o["name"] for o in c.get("/api/runs/patients").json()["capabilities"]["sample"]["settings"]}
        assert "where" in options
        job = submit(c, "/api/runs/patients/generate", {"seed": 0, "count": 20, "settings": {"where": "smoker=yes"}})
        assert job["status"] == "done", job["error"]
        (item_id,) = job["result"]["items"]
        item = c.get(f"/api/gallery/{item_id}").json()
        assert item["suffix"] == ".csv" and item["media_type"].startswith("text/csv") and item["params"]["where"]
        rows = c.get(f"/api/gallery/{item_id}/file").text.strip().splitlines()
        assert len(rows) == 21 and all(row.split(",")[1] == "yes" for row in rows[1:])
        assert "has no value" in error(c.post("/api/runs/patients/generate", json={"settings": {"where": "smoker=maybe"}}), 400)


def test_a_vae_run_edits_an_attribute_and_inverts_for_variations(tmp_path):
    root = tmp_path / "runs"
    genforge.train("vae", "digits", root / "vae", steps=5, progress=False,
                   overrides=["model.width=8", "train.sample_every=0"])
    with TestClient(create_app(root, cpu_jobs=1)) as c:
        item = submit(c, "/api/runs/vae/generate", {"seed": 0, "count": 1, "settings": {"label": 3}})["result"]["items"][0]
        job = submit(c, "/api/runs/vae/refine", {"mode": "attribute", "input_id": item, "source": 3, "target": 8,
                                                  "strength": 1.0, "count": 3, "seed": 0, "settings": {"per_label": 5}})
        assert job["status"] == "done", job["error"]
        edited = [c.get(f"/api/gallery/{i}").json() for i in job["result"]["items"]]
        assert [e["params"]["strengths"] for e in edited][0] == [0.0, 0.5, 1.0]
        assert all(e["parent_id"] == item and e["params"]["attribute"] == "3:8" for e in edited)
        job = submit(c, "/api/runs/vae/refine", {"mode": "variations", "input_id": item, "count": 2, "seed": 1})
        assert job["status"] == "done" and len(job["result"]["items"]) == 2
