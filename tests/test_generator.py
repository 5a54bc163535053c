import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pathsynth.generators import DEFAULT_GENERATOR_DIR, get_generator, load_embedded_generator
from pathsynth.generators.embedded import PathSynthPipeline, build_inference_scheduler, spaced_timesteps
from pathsynth.classifier import ModelFileError
from tiny_models import tiny_generator, tiny_pipeline

REPO = Path(__file__).resolve().parent.parent
SHIPPED = (DEFAULT_GENERATOR_DIR / "model_index.json").is_file()


def _seeded(n, start=0):
    return [torch.Generator().manual_seed(start + i) for i in range(n)]


def test_pipeline_output_types_and_shapes():
    pipe = tiny_pipeline()
    pil = pipe([0, "TUM"], num_images_per_prompt=2, num_inference_steps=3, generator=_seeded(4)).images
    assert len(pil) == 4 and pil[0].size == (28, 28) and pil[0].mode == "RGB"
    arr = pipe("adipose", num_inference_steps=3, output_type="uint8").images
    assert arr.shape == (1, 28, 28, 3) and arr.dtype == np.uint8
    flt = pipe(5, num_inference_steps=3, output_type="np").images
    assert flt.dtype == np.float32 and flt.min() >= 0 and flt.max() <= 1


def test_save_load_round_trip(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(str(tmp_path))
    again = PathSynthPipeline.from_pretrained(str(tmp_path))
    assert all(torch.equal(p, q) for p, q in zip(pipe.unet.parameters(), again.unet.parameters()))
    a = pipe([1, 2], num_inference_steps=3, generator=_seeded(2), output_type="np").images
    b = again([1, 2], num_inference_steps=3, generator=_seeded(2), output_type="np").images
    # Same weights, same noise; oneDNN may pick another kernel for mmapped weights on some CPUs (AMD EPYC: 3e-6).
    assert np.allclose(a, b, atol=1e-4)


def test_same_seed_same_image_and_per_image_seeds_are_independent():
    gen = tiny_generator()
    a = gen.generate([3, 4, 5], [10, 11, 12])
    b = gen.generate([3, 4, 5], [10, 11, 12])
    assert np.array_equal(a, b)
    alone = gen.generate([4], [11])  # an image reproduces from its own seed, whatever the batch
    assert np.array_equal(alone[0], a[1])
    assert not np.array_equal(gen.generate([3], [99])[0], a[0])


def test_timestep_power_one_is_the_schedulers_even_spacing_and_larger_powers_end_at_lower_noise():
    scheduler = build_inference_scheduler()
    for steps in (1, 3, 15, 30):
        scheduler.set_timesteps(steps)
        assert spaced_timesteps(steps, 1.0) == scheduler.timesteps.tolist()  # power 1 = the old sampler
    for power in (1.5, 2.0):
        ts = spaced_timesteps(15, power)
        assert ts[0] == 999 and ts == sorted(set(ts), reverse=True)
        assert ts[-1] < spaced_timesteps(15, 1.0)[-1]  # the last jump to a clean image starts from less noise
    with pytest.raises(ValueError):
        spaced_timesteps(15, 0.0)


def test_timestep_power_reaches_the_solver():
    pipe = tiny_pipeline()
    even = pipe(3, num_inference_steps=4, generator=_seeded(1), output_type="np", timestep_power=1.0).images
    dense = pipe(3, num_inference_steps=4, generator=_seeded(1), output_type="np", timestep_power=2.0).images
    assert not np.allclose(even, dense)
    assert pipe.scheduler.timesteps.tolist() == spaced_timesteps(4, 2.0)


def test_guidance_changes_the_output():
    pipe = tiny_pipeline()
    with torch.no_grad():  # give the class embedding weight so conditional and null predictions differ
        pipe.unet.class_embedding.weight.normal_(0, 1.0)
    one = pipe(6, num_inference_steps=3, guidance_scale=1.0, generator=_seeded(1), output_type="np").images
    four = pipe(6, num_inference_steps=3, guidance_scale=4.0, guidance_interval=(0.0, 1.0), generator=_seeded(1),
                output_type="np").images
    assert np.abs(one - four).mean() > 1e-4
    # Guidance only inside its interval: an interval no timestep falls in is exactly no guidance, a partial one
    # lies in between.
    never = pipe(6, num_inference_steps=3, guidance_scale=4.0, guidance_interval=(0.0, 0.01), generator=_seeded(1),
                 output_type="np").images
    middle = pipe(6, num_inference_steps=3, guidance_scale=4.0, guidance_interval=(0.2, 0.8), generator=_seeded(1),
                  output_type="np").images
    assert np.array_equal(never, one)
    assert not np.array_equal(middle, one) and not np.array_equal(middle, four)


def test_bad_arguments_are_refused():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError):
        pipe(0, num_inference_steps=0)
    with pytest.raises(KeyError):
        pipe(12)
    with pytest.raises(ValueError, match="adipose"):  # a catalogue lookup naming the labels, like DiT's
        pipe.get_label_ids("fat cells")  # free text is resolved before the pipeline (pathsynth.resolver)
    assert pipe.get_label_ids(["TUM", "adipose", 3, "Mucus"]) == [8, 0, 3, 4]
    with pytest.raises(ValueError, match="one seed per image"):
        tiny_generator().generate([1, 2], [1])


def test_training_script_runs_and_resumes(tmp_path):
    sys.path.insert(0, str(REPO))
    from train.generator import Config, main

    from sample_tiles import shared_sample_npz

    cfg = Config(steps=2, batch_size=8, data=str(shared_sample_npz()), out_dir=str(tmp_path / "run"),
                 block_out_channels=(16, 32, 32),
                 sample_every=2, checkpoint_every=1, inference_steps=2, threads=1)
    main(cfg)
    assert (tmp_path / "run" / "samples_000002.png").is_file()
    cfg.steps, cfg.resume = 3, True
    main(cfg)
    summary = json.loads((tmp_path / "run" / "pipeline" / "training_summary.json").read_text())
    assert summary["final_step"] == 3
    gen = load_embedded_generator(tmp_path / "run" / "pipeline", num_inference_steps=2)
    assert gen.generate([0], [0]).shape == (1, 28, 28, 3)


def test_broken_generator_files_give_a_clear_error(tmp_path):
    tiny_pipeline().save_pretrained(str(tmp_path))
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="train/generator.py"):
        load_embedded_generator(tmp_path)
    weights.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_embedded_generator(tmp_path)
    with pytest.raises(ValueError, match="unknown generator backend"):
        get_generator("dall-e")


@pytest.mark.skipif(not SHIPPED, reason="shipped generator not trained yet")
def test_shipped_pipeline_loads_offline_and_makes_nine_distinct_tissues():
    gen = load_embedded_generator()
    images = gen.generate(list(range(9)), list(range(9)))
    assert images.shape == (9, 28, 28, 3)
    assert len({img.tobytes() for img in images}) == 9
    assert images.std() > 10  # not blank noise-free output


def test_worker_threads_sample_the_same_images_with_their_own_scheduler():
    from concurrent.futures import ThreadPoolExecutor

    gen = tiny_generator()
    expected = gen.generate([2, 7], [5, 6])
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: gen.generate([2, 7], [5, 6]), range(4)))
    assert all(np.array_equal(r, expected) for r in results)
    assert np.array_equal(gen.generate([2, 7], [5, 6]), gen.pipeline([2, 7], generator=_seeded_list([5, 6]),
                                                                       num_inference_steps=4, output_type="uint8").images)


def _seeded_list(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_sde_solver_images_reproduce_from_their_own_seed():
    from diffusers import DPMSolverMultistepScheduler

    gen = tiny_generator(steps=3)
    gen.pipeline.scheduler = DPMSolverMultistepScheduler.from_config(gen.pipeline.scheduler.config,
                                                                     algorithm_type="sde-dpmsolver++")
    pair = gen.generate([2, 4], [10, 11])
    torch.manual_seed(123)  # the global RNG must not matter: each image's noise comes from its own seed
    alone = gen.generate([4], [11])
    assert np.array_equal(alone[0], pair[1])


def test_background_gets_its_own_sampler_and_keeps_its_seed_in_a_mixed_batch():
    gen = tiny_generator(steps=3)
    # the shipped override, less discriminator guidance, which a pipeline without a discriminator cannot do
    assert gen.pipeline.discriminator is None
    assert gen.tissue_sampler[1] == {"num_inference_steps": 40, "guidance_scale": 1.0}
    gen.tissue_sampler = {1: {"num_inference_steps": 5, "guidance_scale": 1.0}}
    calls = []
    render_group = gen._render_group

    def recording(tissues, generators, **settings):
        calls.append((tissues, settings))
        return render_group(tissues, generators, **settings)

    gen._render_group = recording
    mixed = gen.generate(["TUM", "BACK", "ADI", "BACK"], [10, 11, 12, 13])
    assert sorted(calls) == [([1, 1], {"guidance_scale": 1.0, "num_inference_steps": 5}), ([8, 0], {})]
    # each image is the one its tissue and seed give alone, wherever it sat in the batch
    assert np.array_equal(gen.generate(["BACK"], [13])[0], mixed[3])
    assert np.array_equal(gen.generate(["TUM"], [10])[0], mixed[0])
    # the override really changes the background tile, and a caller's explicit settings win over it
    gen.tissue_sampler = {}
    assert not np.array_equal(gen.generate(["BACK"], [13])[0], mixed[3])
    gen.tissue_sampler = {1: {"num_inference_steps": 5}}
    calls.clear()
    gen.render(["BACK"], [13], num_inference_steps=3)
    assert calls == [([1], {"num_inference_steps": 3})]
