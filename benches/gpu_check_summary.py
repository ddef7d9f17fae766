"""The summary of benches/gpu_check.sh: reads the step outputs in its work folder and writes
results.json (everything measured, raw), summary.json (the figures and ratios the issue asks for)
and summary.txt (the same, for people) into its --out folder. Standard library only."""
import argparse
import json
import os


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        # A JSON document after other lines (a tool's chatter on stdout): take the last object.
        start = text.rfind("\n{")
        try:
            return json.loads(text[start + 1:]) if start >= 0 else None
        except ValueError:
            return None


def events(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except (OSError, ValueError):
        pass
    return out


def tsv(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        return []


def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def g(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def run_summary(records):
    """The last base epoch: accuracy and each score's AUROC per test OOD set, and the mean."""
    base = [r for r in records if r.get("phase", "base") == "base"]
    if not base:
        return None
    r = base[-1]
    aurocs = {}
    for name, scores in (r.get("ood") or {}).items():
        for score, m in scores.items():
            if isinstance(m, dict) and m.get("auroc") is not None:
                aurocs[f"{name}/{score}"] = m["auroc"]
    for score, m in (r.get("ood_mean") or {}).items():
        if isinstance(m, dict) and m.get("auroc") is not None:
            aurocs[f"mean/{score}"] = m["auroc"]
    return {
        "epochs": r.get("epoch"),
        "test_acc": r.get("test_acc"),
        "train_loss": r.get("train_loss"),
        "test_loss": r.get("test_loss"),
        "val_energy_auroc": g(r, "val", "energy", "auroc"),
        "ood_auroc": aurocs,
        "samples_per_sec_mean": sum(x.get("samples_per_sec", 0) for x in base) / len(base),
        "seconds_total": sum(x.get("seconds", 0) for x in base),
    }


def autotune_log(path):
    """cubecl's autotune log at level "full": one "Fastest result" line per tuned key, one
    "compilation & bench: T" line per candidate kernel."""
    import re
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return None
    unit = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
    secs = sum(float(v) * unit.get(u, 0.0) for v, u in re.findall(r"compilation & bench: ([0-9.]+)(s|ms|µs|us|ns)\)", text))
    return {"keys_tuned": text.count("Fastest result"), "candidates": text.count("compilation & bench"), "candidate_secs_sum": secs}


def tune_text(t):
    if not t:
        return "no log (nothing tuned: flex has no autotune, or the step did not run)"
    return f"{t['keys_tuned']} keys, {t['candidates']} candidates, {t['candidate_secs_sum']:.1f} s summed"


def main():
    ap = argparse.ArgumentParser()
    for a in ["--work", "--out", "--device", "--run-device", "--variant", "--driver", "--elapsed", "--torch-device", "--torch"]:
        ap.add_argument(a, default="")
    a = ap.parse_args()
    w = a.work
    steps = [{"step": s[0], "exit": s[1], "seconds": float(s[2]) if len(s) > 2 and s[2] else None} for s in tsv(os.path.join(w, "steps.tsv"))]
    variants = [{"variant": v[0], "unleash": v[1], "vulkaninfo_devices": v[2] if len(v) > 2 else ""} for v in tsv(os.path.join(w, "variants.tsv"))]
    try:
        auto = open(os.path.join(w, "auto.txt")).read().strip()
    except OSError:
        auto = None
    raw = {k: load(os.path.join(w, f)) for k, f in [
        ("bench_smallcnn_device", "bench_smallcnn_dev.json"),
        ("bench_smallcnn_cpu", "bench_smallcnn_cpu.json"),
        ("torch_smallcnn", "torch_smallcnn.json"),
        ("bench_resnet18", "bench_r18.json"),
        ("torch_resnet18", "torch_r18.json"),
    ]}
    runs = {"device": events(os.path.join(w, "run_dev", "events.jsonl")), "cpu": events(os.path.join(w, "run_cpu", "events.jsonl"))}
    secs = {s["step"]: s["seconds"] for s in steps if s["exit"] not in ("skipped",)}

    sc_dev, sc_cpu = g(raw["bench_smallcnn_device"], "unleash"), g(raw["bench_smallcnn_cpu"], "unleash")
    sc_torch_cpu = g(raw["bench_smallcnn_device"], "pytorch_reference")
    sc_torch = raw["torch_smallcnn"]
    r18 = g(raw["bench_resnet18"], "unleash")
    r18_torch = raw["torch_resnet18"]
    tuning = {name: autotune_log(os.path.join(w, f"autotune_{name}.log")) for name in ["bench_smallcnn", "bench_resnet18", "train"]}
    r18_secs = next((v for k, v in secs.items() if k.startswith("bench resnet18")), None)
    dev_run, cpu_run = run_summary(runs["device"]), run_summary(runs["cpu"])
    closeness = None
    if dev_run and cpu_run:
        keys = sorted(set(dev_run["ood_auroc"]) & set(cpu_run["ood_auroc"]))
        diffs = {k: dev_run["ood_auroc"][k] - cpu_run["ood_auroc"][k] for k in keys}
        worst = max(diffs, key=lambda k: abs(diffs[k])) if diffs else None
        closeness = {
            "test_acc_diff": dev_run["test_acc"] - cpu_run["test_acc"],
            "max_abs_auroc_diff": abs(diffs[worst]) if worst else None,
            "max_abs_auroc_diff_at": worst,
            "mean_energy_auroc_diff": diffs.get("mean/energy"),
            "auroc_diffs": diffs,
        }
    f = lambda d, k: g(d, k)
    summary = {
        "device_asked": a.device,
        "device_used": a.run_device,
        "device_description": f(sc_dev, "device") or f(r18, "device"),
        "auto_picks": auto,
        "driver": a.driver or None,
        "vulkan_variant_that_worked": a.variant,
        "script_seconds": float(a.elapsed) if a.elapsed else None,
        "smallcnn": {
            "device_train_samples_per_sec": f(sc_dev, "train_samples_per_sec"),
            "device_eval_samples_per_sec": f(sc_dev, "eval_samples_per_sec"),
            "cpu_train_samples_per_sec": f(sc_cpu, "train_samples_per_sec"),
            "cpu_eval_samples_per_sec": f(sc_cpu, "eval_samples_per_sec"),
            "cpu_threads": f(sc_cpu, "threads"),
            "train_device_over_cpu": ratio(f(sc_dev, "train_samples_per_sec"), f(sc_cpu, "train_samples_per_sec")),
            "goal_train_device_over_cpu": 10.0,
            "torch_cpu_train_samples_per_sec": f(sc_torch_cpu, "train_samples_per_sec"),
            "torch_cpu_eval_samples_per_sec": f(sc_torch_cpu, "eval_samples_per_sec"),
            "torch_device": f(sc_torch, "device"),
            "torch_train_samples_per_sec": f(sc_torch, "train_samples_per_sec"),
            "torch_eval_samples_per_sec": f(sc_torch, "eval_samples_per_sec"),
            "train_unleash_over_torch": ratio(f(sc_dev, "train_samples_per_sec"), f(sc_torch, "train_samples_per_sec")),
            "eval_unleash_over_torch": ratio(f(sc_dev, "eval_samples_per_sec"), f(sc_torch, "eval_samples_per_sec")),
        },
        "resnet18": {
            "data": "sample Fashion-MNIST padded to 32x32 and tiled to 3 channels, as CIFAR-10 binary batches",
            "train_samples": f(r18, "per_sample_loss_pass_samples"),
            "device_train_samples_per_sec": f(r18, "train_samples_per_sec"),
            "device_eval_samples_per_sec": f(r18, "eval_samples_per_sec"),
            "torch_device": f(r18_torch, "device"),
            "torch_train_samples_per_sec": f(r18_torch, "train_samples_per_sec"),
            "torch_eval_samples_per_sec": f(r18_torch, "eval_samples_per_sec"),
            "train_unleash_over_torch": ratio(f(r18, "train_samples_per_sec"), f(r18_torch, "train_samples_per_sec")),
            "eval_unleash_over_torch": ratio(f(r18, "eval_samples_per_sec"), f(r18_torch, "eval_samples_per_sec")),
            "goal_train_unleash_over_torch": 0.5,
            "bench_wall_secs": r18_secs,
            "autotune": tuning["bench_resnet18"],
        },
        "autotune": tuning,
        "train_5_epochs": {"device": dev_run, "cpu": cpu_run, "device_minus_cpu": closeness},
        "steps": steps,
    }
    results = {"summary": summary, "variants": variants, "raw": raw, "events": runs}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    with open(os.path.join(a.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)

    def num(v, fmt="{:.1f}"):
        return fmt.format(v) if isinstance(v, (int, float)) else "n/a"

    s, r = summary["smallcnn"], summary["resnet18"]
    lines = [
        f"gpu_check --device {a.device}: ran on {a.run_device}; {summary['device_description'] or 'no bench device'}",
        f"auto picks: {auto}; Vulkan variant that worked: {a.variant}; driver {a.driver or 'n/a'}",
        "",
        "SmallCNN, sample data (samples/s; train batch 128, eval batch 500):",
        f"  unleash {a.run_device}: train {num(s['device_train_samples_per_sec'])}, eval {num(s['device_eval_samples_per_sec'])}",
        f"  unleash cpu (flex, {s['cpu_threads']} threads): train {num(s['cpu_train_samples_per_sec'])}, eval {num(s['cpu_eval_samples_per_sec'])}",
        f"  {a.run_device}/cpu train: {num(s['train_device_over_cpu'], '{:.2f}')}x (goal on a GPU: >= 10x)",
        f"  PyTorch CPU (bench --pytorch): train {num(s['torch_cpu_train_samples_per_sec'])}, eval {num(s['torch_cpu_eval_samples_per_sec'])}",
        f"  PyTorch {a.torch_device} eager ({s['torch_device'] or 'not run'}): train {num(s['torch_train_samples_per_sec'])}, eval {num(s['torch_eval_samples_per_sec'])}; unleash/torch train {num(s['train_unleash_over_torch'], '{:.2f}')}x, eval {num(s['eval_unleash_over_torch'], '{:.2f}')}x",
        "",
        f"ResNet-18, 32x32x3 ({r['data']}; {r['train_samples']} training images):",
        f"  unleash {a.run_device}: train {num(r['device_train_samples_per_sec'])}, eval {num(r['device_eval_samples_per_sec'])}",
        f"  PyTorch {a.torch_device} eager: train {num(r['torch_train_samples_per_sec'])}, eval {num(r['torch_eval_samples_per_sec'])}; unleash/torch train {num(r['train_unleash_over_torch'], '{:.2f}')}x (goal >= 0.5x), eval {num(r['eval_unleash_over_torch'], '{:.2f}')}x",
        f"  bench wall time {num(r18_secs)} s, of it autotune (compiling and timing candidate kernels): {tune_text(tuning['bench_resnet18'])}",
        "",
    ]
    if dev_run and cpu_run:
        c = closeness
        lines += [
            f"train --seed 0, {dev_run['epochs']} epochs, last epoch, {a.run_device} vs cpu:",
            f"  test accuracy {num(dev_run['test_acc'], '{:.4f}')} vs {num(cpu_run['test_acc'], '{:.4f}')} (diff {num(c['test_acc_diff'], '{:+.4f}')})",
            f"  mean test-OOD Energy AUROC {num(dev_run['ood_auroc'].get('mean/energy'), '{:.4f}')} vs {num(cpu_run['ood_auroc'].get('mean/energy'), '{:.4f}')}",
            f"  largest AUROC difference over every set and score: {num(c['max_abs_auroc_diff'], '{:.4f}')} ({c['max_abs_auroc_diff_at']})",
            f"  training samples/s (events.jsonl, mean over the epochs): {num(dev_run['samples_per_sec_mean'])} vs {num(cpu_run['samples_per_sec_mean'])}",
        ]
    else:
        lines.append("train: not both runs finished (see the steps)")
    lines += ["", "autotune per process (cubecl keeps no cache on disk in this build: each process tunes anew):"]
    lines += [f"  {k}: {tune_text(v)}" for k, v in tuning.items()]
    lines += ["", "steps (exit status, seconds):"] + [f"  {x['step']}: {x['exit']} {num(x['seconds'])}" for x in steps]
    lines += ["", "Vulkan variants:"] + [f"  {v['variant']}: {v['unleash']} | vulkaninfo: {v['vulkaninfo_devices']}" for v in variants]
    lines.append(f"script: {num(summary['script_seconds'], '{:.0f}')} s")
    with open(os.path.join(a.out, "summary.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
