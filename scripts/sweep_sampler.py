"""Sampler settings vs speed and quality of the shipped embedded generator (how DEFAULT_STEPS was chosen).

    python scripts/sweep_sampler.py [PER_TISSUE] [STEPS:GUIDANCE ...]
    python scripts/sweep_sampler.py 40 20:2 15:2 15:3 15:4 12:3

For each setting: ms per image (batches of 64), macro-F1 of the raw images judged by the shipped classifier,
and the share the verify loop would accept on the first try (per tissue too). Seeds are fixed, so settings
compare on the same starting noise.
"""

import sys
import time

import numpy as np
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from pathsynth.verify import default_verifier


def main() -> None:
    per_tissue = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    settings = [tuple(map(float, s.split(":"))) for s in sys.argv[2:]] or [(20, 2.0), (15, 2.0), (15, 3.0)]
    verifier = default_verifier()
    generator = verifier.generator
    tissues = np.repeat(np.arange(9), per_tissue)
    generator.generate([0] * 8, list(range(8)))  # warm-up
    for steps, guidance in settings:
        generator.num_inference_steps, generator.guidance_scale = int(steps), guidance
        started, chunks = time.perf_counter(), []
        for s in tqdm(range(0, len(tissues), 64), desc=f"{int(steps)} steps, guidance {guidance:g}", leave=False):
            batch = tissues[s:s + 64]
            chunks.append(generator.generate(batch.tolist(), [10_000 + s + i for i in range(len(batch))]))
        ms_per_image = 1000 * (time.perf_counter() - started) / len(tissues)
        probabilities, realism, accepted = verifier.judge(np.concatenate(chunks), tissues)
        predicted = probabilities.argmax(1)
        per_tissue_accept = [accepted[tissues == t].mean() for t in range(9)]
        print(f"steps {int(steps)} guidance {guidance:g}: {ms_per_image:.0f} ms/img, "
              f"macro-F1 {f1_score(tissues, predicted, average='macro'):.3f}, first-try acceptance "
              f"{accepted.mean():.3f} (realism rejects {(realism < verifier.realism_threshold).mean():.3f}); "
              f"F1 per tissue {np.round(f1_score(tissues, predicted, average=None), 2).tolist()}, "
              f"acceptance per tissue {np.round(per_tissue_accept, 2).tolist()}", flush=True)


if __name__ == "__main__":
    main()
