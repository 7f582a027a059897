#!/usr/bin/env python3
"""End-to-end test of `kvgrid download` against tests/hub/fake_hub.py (loopback only, bounded).

usage: cli_download_test.py KVGRID_BINARY FIXTURES_DIR
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = "EleutherAI/pythia-70m-deduped"


def check_score(kvgrid, env, repo, revision, expected_json, tmp):
    """`kvgrid score` of the Hub model at `revision` gives the fixture's HF loss (1e-4)."""
    with open(expected_json) as f:
        expected = json.load(f)
    ids = os.path.join(tmp, "ids-" + revision + ".txt")
    with open(ids, "w") as f:
        f.write(" ".join(map(str, expected["input_ids"])))
    p = subprocess.run([kvgrid, "score", "--model", repo, "--revision", revision, "--ids", ids,
                        "--dtype", "float32", "--threads", "1", "--json"],
                       env=dict(env, KVGRID_BLAS_CORETYPE="keep"), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, (revision, p.stdout, p.stderr)
    got = json.loads(p.stdout)
    loss = got["nll_mean"]
    assert abs(loss - expected["loss"]) < 1e-4, (revision, loss, expected["loss"])


def main():
    kvgrid, fixtures = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="kvgrid-cli-") as tmp:
        port_file = os.path.join(tmp, "port")
        server = subprocess.Popen([
            sys.executable, os.path.join(HERE, "fake_hub.py"), "--port-file", port_file,
            "--model-dir", os.path.join(fixtures, "models/tiny-neox-pythia-like"),
            "--bin-model-dir", os.path.join(fixtures, "models/tiny-neox-sequential-bin"),
            "--tokenizer", os.path.join(fixtures, "tokenizer/gpt-neox-20b-tokenizer.json"),
            "--wikitext-text", os.path.join(fixtures, "text/wikitext-2-raw-v1-test.txt"),
            "--pg19-book", os.path.join(fixtures, "text/pg19-test-10146.txt"),
            "--lifetime", "100"])
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(port_file):
                assert time.monotonic() < deadline, "fake hub did not start"
                assert server.poll() is None, "fake hub exited"
                time.sleep(0.05)
            with open(port_file) as f:
                endpoint = "http://127.0.0.1:" + f.read().strip()
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("HF_", "KVGRID_", "HUGGING"))}
            env.update(HF_ENDPOINT=endpoint, HF_HOME=os.path.join(tmp, "hf"),
                       KVGRID_CACHE=os.path.join(tmp, "kv"),
                       KVGRID_PG19_URL_BASE=endpoint + "/pg19")

            def run(*args, extra_env=None, expect_rc=0):
                e = dict(env, **(extra_env or {}))
                p = subprocess.run([kvgrid, "download", *args], env=e, capture_output=True,
                                   text=True, timeout=60)
                assert p.returncode == expect_rc, (args, p.returncode, p.stdout, p.stderr)
                return p.stdout.strip(), p.stderr

            snapshots = os.path.join(tmp, "hf", "hub", "models--EleutherAI--pythia-70m-deduped",
                                     "snapshots")
            out, _ = run(REPO)
            assert out.startswith(snapshots + os.sep), out
            for name in ("config.json", "model.safetensors", "tokenizer.json"):
                assert os.path.islink(os.path.join(out, name)), name
            out_json, _ = run(REPO, "--revision", "v1.0", "--json")
            j = json.loads(out_json)
            assert j["revision"] == "v1.0" and j["downloaded"] == [], j
            assert j["path"] == os.path.join(snapshots, j["commit"]), j

            # A step revision ships pytorch_model.bin only (as Pythia's do): it is downloaded in
            # the Hub's cache layout and scores to Hugging Face's loss for its fixture.
            step = json.loads(run(REPO, "--revision", "step143000", "--json")[0])
            assert "pytorch_model.bin" in step["downloaded"], step
            assert os.path.islink(os.path.join(step["path"], "pytorch_model.bin")), step
            assert not os.path.exists(os.path.join(step["path"], "model.safetensors")), step
            check_score(kvgrid, env, REPO, "step143000",
                        os.path.join(fixtures, "models/tiny-neox-sequential/expected.json"), tmp)
            off_step = json.loads(run(REPO, "--revision", "step143000", "--json",
                                      extra_env={"HF_HUB_OFFLINE": "1"})[0])
            assert off_step["path"] == step["path"], (off_step, step)
            # A sharded revision: the index and every shard it names, scoring like main.
            sharded = json.loads(run(REPO, "--revision", "sharded", "--json")[0])
            for name in ("model.safetensors.index.json", "model-00001-of-00002.safetensors",
                         "model-00002-of-00002.safetensors"):
                assert os.path.islink(os.path.join(sharded["path"], name)), (name, sharded)
            check_score(kvgrid, env, REPO, "sharded",
                        os.path.join(fixtures, "models/tiny-neox-pythia-like/expected.json"), tmp)
            off, _ = run(REPO, extra_env={"HF_HUB_OFFLINE": "1"})
            assert off == out, (off, out)
            _, err = run("EleutherAI/missing-model", expect_rc=1)
            assert "not found" in err, err
            _, err = run(REPO, "--revision", "nope", "--offline", expect_rc=1)
            assert "offline" in err and "config.json" in err, err
            run(expect_rc=2)  # neither a model nor --dataset

            wiki, _ = run("--dataset", "wikitext-2-raw-v1")
            with open(wiki, "rb") as a, open(
                    os.path.join(fixtures, "text/wikitext-2-raw-v1-test.txt"), "rb") as b:
                assert a.read() == b.read(), "wikitext text differs from the fixture"
            book = json.loads(run("--dataset", "pg19", "--json")[0])
            assert book["sample"] == 10146 and book["path"].endswith("pg19/test/10146.txt"), book
            _, err = run("--dataset", "pg19", "--sample", "7", expect_rc=1)
            assert "test_files.txt" in err, err
        finally:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
    print("cli_download_test: ok")


if __name__ == "__main__":
    main()
