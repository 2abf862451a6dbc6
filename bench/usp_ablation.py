"""USP's joint learning against its random start (``steps=0``): digits, the test suite's host, students extracted
through the marked API with 300 and 600 queries, 6 keys; the amplitude is the first argument (at the default 0.1
both variants reach the sign test's floor). Besides score and p-value: ``z = statistic / sqrt(sum_j T_j^2)``, the
statistic in units of its spread under the null. Not a test.

    python bench/usp_ablation.py 0.02
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import _train_digits_target  # noqa: E402  (the test suite's digits host)

from modelprint.access import WhiteBox  # noqa: E402
from modelprint.data import load_data  # noqa: E402
from modelprint.train import predict  # noqa: E402
from modelprint.watermarks import USP  # noqa: E402
from modelprint.watermarks.usp import detector  # noqa: E402
from modelprint.zoo import Extract  # noqa: E402


def z_value(scheme: USP, key, student) -> float:
    """The sign statistic over its null spread, from the student's answers on the key images."""
    top = key.labels.long()
    relative = lambda q: q / q.gather(1, top[:, None])  # noqa: E731
    residual = (relative(torch.softmax(predict(student, key.samples), 1)) - relative(key.tensors["host_log_p"].exp())).clamp(-scheme.clip, scheme.clip)
    t = detector(residual, top, scheme.perturbation(key).pattern(key.samples))
    return float((key.tensors["sign"].double() * t).sum() / t.pow(2).sum().sqrt())


def main() -> None:
    amplitude = float(sys.argv[1]) if len(sys.argv) > 1 else 0.02
    data = load_data("digits")
    host = _train_digits_target(data)
    rows = []
    for seed in range(6):
        for steps in (300, 0):
            scheme = USP(seed=seed, inputs=500, steps=steps, amplitude=amplitude)
            marked, key = scheme.embed(host, data.train, held_out=data.test)
            for budget in (300, 600):
                student = Extract(budget=budget, epochs=8, augment="crop").apply(marked, data.train, seed=50 + seed)
                result = scheme.verify(WhiteBox(student), key)
                rows.append({"seed": seed, "steps": steps, "budget": budget, "score": result.matching_score, "p": result.p_value,
                             "z": z_value(scheme, key, student)})
                print(rows[-1], flush=True)
    for steps in (300, 0):
        for budget in (300, 600):
            group = [r for r in rows if r["steps"] == steps and r["budget"] == budget]
            print(f"steps {steps} budget {budget}: mean score {np.mean([r['score'] for r in group]):.3f}, mean z {np.mean([r['z'] for r in group]):.2f}, "
                  f"declared at 0.05 {sum(r['p'] <= 0.05 for r in group)}/{len(group)}, at 0.001 {sum(r['p'] <= 0.001 for r in group)}/{len(group)}, "
                  f"median p {np.median([r['p'] for r in group]):.3g}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
