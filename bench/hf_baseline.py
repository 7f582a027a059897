#!/usr/bin/env python3
"""Hugging Face transformers baseline for `kvgrid bench` (same JSON keys, same definitions).

What it times (../shared/docs/metrics.md, "Generation timing"): one greedy, batch-1
`GPTNeoXForCausalLM.generate(ids, max_new_tokens=N, min_new_tokens=N, do_sample=False,
use_cache=True)` with EOS disabled (eos_token_id=None), so every run makes exactly N tokens.
  t0      host clock right before generate() (device synchronised first; prompt ids already on
          the device, tokenisation is outside the timer). HF's generate() set-up is inside TTFT.
  t_i     a streamer's put() is called by generate() with each new token id, already copied to
          the host; it synchronises the device (CUDA) and reads the clock. The first put() carries
          the prompt (2-D) and is not a token.
  TTFT = t_1 - t0; TPOT = (t_N - t_1)/(N-1); total = t_N - t0; throughput = N/total;
  total throughput = (P+N)/total; prefill throughput = P/TTFT; decode_step_ms = t_i - t_{i-1}.
Memory: CUDA peak allocated/reserved (reset before each run) or, on CPU, the process peak RSS
(VmHWM, reset through /proc/self/clear_refs); kv_bytes_peak = element_size*numel over every K
and V tensor of the returned cache (HF's dynamic cache only grows, so its peak is its end).
`--warmup` runs are discarded, then `--repeats` timed runs; medians plus every raw sample are
printed as ONE JSON object on stdout.
"""
import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time


def fail(msg):
    print(f"hf_baseline: error: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="checkpoint dir (config.json, model.safetensors)")
    p.add_argument("--prompt-tokens", type=int, required=True, help="prompt length P")
    p.add_argument("--new-tokens", type=int, required=True, help="generated tokens N (EOS ignored)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (5)")
    p.add_argument("--warmup", type=int, default=2, help="discarded warm-up runs (2)")
    p.add_argument("--dtype", default="float32", choices=["float16", "float32", "bfloat16"])
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch default)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ids", help="file of whitespace-separated token ids (first P are used)")
    src.add_argument("--text", help="text file, tokenised (checkpoint's tokenizer), repeated/cut "
                                    "to P tokens; neither: deterministic ids")
    a = p.parse_args()
    if a.prompt_tokens < 1 or a.new_tokens < 1 or a.repeats < 1 or a.warmup < 0:
        p.error("--prompt-tokens, --new-tokens and --repeats must be >= 1, --warmup >= 0")
    return a


def build_prompt(a, vocab_size, tokenizer_loader):
    """Returns (ids, tokenize_ms)."""
    P = a.prompt_tokens
    if a.ids:
        with open(a.ids) as f:
            ids = [int(t) for t in f.read().split()]
        if len(ids) < P:
            fail(f"{a.ids} has {len(ids)} ids, fewer than --prompt-tokens {P}")
        return ids[:P], 0.0
    if a.text:
        with open(a.text, encoding="utf-8") as f:
            text = f.read()
        tok = tokenizer_loader()
        t = time.perf_counter()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ms = (time.perf_counter() - t) * 1e3
        if not ids:
            fail(f"{a.text} tokenises to no tokens")
        while len(ids) < P:
            ids = ids + ids
        return ids[:P], ms
    # Deterministic ids (no input given): spread over the vocabulary, never id 0.
    return [1 + (i * 7919 + 13) % (vocab_size - 1) for i in range(P)], 0.0


def kv_bytes(c):
    """Exact bytes of every K/V tensor held by a cache (legacy tuples or Cache objects)."""
    import torch
    if c is None:
        return 0
    if torch.is_tensor(c):
        return c.element_size() * c.numel()
    if isinstance(c, (list, tuple)):
        return sum(kv_bytes(x) for x in c)
    if hasattr(c, "layers"):  # transformers >= 4.56: DynamicCache.layers[i].keys/.values
        return sum(kv_bytes(getattr(l, "keys", None)) + kv_bytes(getattr(l, "values", None))
                   for l in c.layers)
    if hasattr(c, "key_cache"):  # transformers 4.36 - 4.55
        return kv_bytes(c.key_cache) + kv_bytes(c.value_cache)
    raise TypeError(f"unknown cache type {type(c).__name__}")


def proc_field(path, key):
    """The value after `key` in a /proc file such as /proc/self/status, or None."""
    try:
        with open(path) as f:
            return next((l.split(":", 1)[1].strip() for l in f if l.startswith(key)), None)
    except OSError:
        return None


def peak_rss_bytes():
    hwm = proc_field("/proc/self/status", "VmHWM:")  # "123456 kB"
    if hwm:
        return int(hwm.split()[0]) * 1024
    import resource  # no /proc: lifetime peak, cannot be reset
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_rss_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def main():
    a = parse_args()
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        fail(f"--model {a.model}: no such checkpoint directory (config.json missing)")
    try:
        import torch
        import transformers
    except ImportError as e:
        fail(f"{e}; install torch and transformers (pip install torch transformers safetensors)")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        fail("--device cuda but torch.cuda.is_available() is False")
    dtype = getattr(torch, a.dtype)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    try:
        with open(os.path.join(a.model, "config.json")) as f:
            vocab = json.load(f).get("vocab_size", 50304)
        ids, tokenize_ms = build_prompt(
            a, vocab, lambda: transformers.AutoTokenizer.from_pretrained(a.model))
        # torch_dtype is understood by every transformers version; .to() makes sure of it anyway.
        model = transformers.GPTNeoXForCausalLM.from_pretrained(a.model, torch_dtype=dtype)
    except (OSError, ValueError) as e:
        fail(f"loading {a.model}: {e}")
    model = model.to(device=device, dtype=dtype).eval()
    P, N = a.prompt_tokens, a.new_tokens
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    # Keyword arguments, not a GenerationConfig object: recent transformers fill the unset fields
    # of a passed config from the model's (eos_token_id=0 for Pythia); keywords override both.
    # min_new_tokens=N also keeps EOS out should some version still apply one.
    gen = dict(max_new_tokens=N, min_new_tokens=N, do_sample=False, num_beams=1, use_cache=True,
               eos_token_id=None, pad_token_id=0, return_dict_in_generate=True)

    class Clock:  # the streamer: generate() calls put() with each new token id, on the host
        def __init__(self):
            self.marks = []

        def put(self, value):
            if value.dim() > 1:  # the prompt, sent once before the prefill
                return
            sync()
            self.marks.append(time.perf_counter())

        def end(self):
            pass

    rss_resettable = True
    s = {k: [] for k in ("ttft_ms", "tpot_ms", "throughput_tok_s", "total_throughput_tok_s",
                         "prefill_tok_s", "peak_memory_bytes", "peak_reserved_bytes")}
    steps, kv = [], 0
    for rep in range(a.warmup + a.repeats):
        clock = Clock()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        else:
            rss_resettable = reset_rss_peak() and rss_resettable
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model.generate(input_ids, attention_mask=attention_mask, streamer=clock, **gen)
        sync()
        m = clock.marks
        if out.sequences.shape[1] != P + N or len(m) != N:
            fail(f"generate made {out.sequences.shape[1] - P} tokens ({len(m)} streamed), not {N}")
        if rep < a.warmup:
            continue
        ttft, total = m[0] - t0, m[-1] - t0
        s["ttft_ms"].append(ttft * 1e3)
        s["tpot_ms"].append((m[-1] - m[0]) / (N - 1) * 1e3 if N > 1 else 0.0)
        s["throughput_tok_s"].append(N / total)
        s["total_throughput_tok_s"].append((P + N) / total)
        s["prefill_tok_s"].append(P / ttft)
        if cuda:
            s["peak_memory_bytes"].append(torch.cuda.max_memory_allocated(device))
            s["peak_reserved_bytes"].append(torch.cuda.max_memory_reserved(device))
        else:
            s["peak_memory_bytes"].append(peak_rss_bytes())
        steps += [(m[i] - m[i - 1]) * 1e3 for i in range(1, N)]
        kv = kv_bytes(out.past_key_values)
        del out

    result = {k: statistics.median(v) for k, v in s.items() if v}
    result.update(kv_bytes_peak=kv, kv_bytes_end=kv, kv_tokens_max=P + N - 1,
                  tokenize_ms=tokenize_ms, repeats=a.repeats)
    result["samples"] = {"ttft_ms": s["ttft_ms"], "tpot_ms": s["tpot_ms"],
                         "throughput_tok_s": s["throughput_tok_s"], "decode_step_ms": steps}
    if cuda:
        mem = "cuda peak allocated (torch.cuda.max_memory_allocated), reset per run"
    elif rss_resettable:
        mem = "process peak RSS (VmHWM), reset per run via /proc/self/clear_refs"
    else:
        mem = "process peak RSS since process start (VmHWM/ru_maxrss; could not be reset)"
    result["environment"] = {
        "engine": "hf-transformers",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else
        (proc_field("/proc/cpuinfo", "model name") or platform.machine()),
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "memory_metric": mem,
        "host": socket.gethostname(),
        "config": {"model": a.model, "prompt_tokens": P, "new_tokens": N, "warmup": a.warmup,
                   "input": a.ids or a.text or "deterministic ids"},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
