"""The bad inputs of ``tests/bad_inputs.py``: command lines with ``{name}`` placeholders, and API calls."""

from __future__ import annotations

import math

import torch

from bad_inputs import Case


def _other_scheme_key():
    """A well-formed DeepSigns-shaped key (what a backdoor verification must refuse)."""
    from modelprint.tasks import Classification
    from modelprint.watermarks import WatermarkKey

    return WatermarkKey(scheme="deepsigns", config={}, task=Classification().to_config(),
                        tensors={"samples": torch.rand(2, 3, 32, 32), "labels": torch.zeros(2, dtype=torch.long)}, thresholds={"black_box": 0.5})


def cli(what: str, *argv: str) -> Case:
    return Case("CLI", what, argv=list(argv))


def api(what: str, call) -> Case:
    return Case("API", what, call=call)


TRAIN = ("train", "--out", "{w}/t.safetensors", "--data", "{data}", "--epochs", "1")
GEN = ("generate", "--model", "{model}", "--data", "{data}", "--n", "2", "--steps", "1", "--out", "{w}/g.safetensors")
VERIFY = ("verify", "--fingerprints", "{fp}", "--records", "{w}/records")
SERVE = ("serve", "--model", "{model}", "--port", "0")
EVAL = ("evaluate", "--out", "{w}/eval", "--data", "{data}")


def _replace(argv: tuple[str, ...], option: str, value: str) -> tuple[str, ...]:
    items = list(argv)
    items[items.index(option) + 1] = value
    return tuple(items)


IMPORT = ("import", "{own_weights}", "--out", "{w}/imported.safetensors")
PROTECT = ("protect", "--model", "{model}", "--data", "{data}", "--out", "{w}/kit")

CASES: list[Case] = [
    # ------------------------------------------------------------------------------------------------ import
    cli("import: a state dict carrying a pickled object", "import", "{payload_pt}", "--arch", "timm:resnet18", "--input-size", "32", "--out", "{w}/i.safetensors"),
    cli("import: weights of another architecture", *IMPORT, "--arch", "timm:resnet18", "--input-size", "32"),
    cli("import: no input size", *IMPORT, "--arch", "timm:resnet18"),
    cli("import: no architecture", *IMPORT, "--input-size", "32"),
    cli("import: an architecture timm does not have", *IMPORT, "--arch", "timm:no_such_net", "--input-size", "32"),
    cli("import: an architecture of an unknown library", *IMPORT, "--arch", "keras:resnet", "--input-size", "32"),
    cli("import: --input-size 0", *IMPORT, "--arch", "timm:resnet18", "--input-size", "0"),
    cli("import: --mean not numbers", *IMPORT, "--arch", "timm:resnet18", "--input-size", "32", "--mean", "a,b,c"),
    cli("import: --mean of two values for three channels", *IMPORT, "--arch", "timm:resnet18", "--input-size", "32", "--mean", "0.1,0.2"),
    cli("import: --runtime bogus", *IMPORT, "--arch", "timm:resnet18", "--input-size", "32", "--runtime", "bogus"),
    cli("import: a file that is not ONNX", "import", "{fake_onnx}", "--mean", "0", "--std", "1", "--out", "{w}/i.safetensors"),
    cli("import: a modelprint model file", "import", "{model}", "--arch", "timm:resnet18", "--input-size", "32", "--out", "{w}/i.safetensors"),
    cli("import: random bytes as weights", "import", "{garbage}", "--arch", "timm:resnet18", "--input-size", "32", "--out", "{w}/i.safetensors"),
    cli("import: --out under a file", *_replace(IMPORT, "--out", "{file}/sub/i.safetensors"), "--arch", "timm:resnet18", "--input-size", "32"),
    cli("import: --class-names of the wrong count", "import", "{timm_weights}", "--arch", "timm:test_resnet", "--input-size", "32", "--class-names", "a,b",
        "--out", "{w}/i.safetensors"),
    cli("train: --arch onnx", *TRAIN, "--arch", "onnx"),
    cli("train: --width for a timm architecture", *TRAIN, "--arch", "timm:resnet18", "--width", "8"),
    cli("train: --data a class folder of one class", *_replace(TRAIN, "--data", "{one_class}")),
    cli("train: --data a class folder of undecodable images", *_replace(TRAIN, "--data", "{broken_images}")),
    cli("verify: --api a mapping with an unknown send", *VERIFY, "--url", "http://127.0.0.1:9", "--api", "{api_bad}"),
    cli("verify: --api a YAML list", *VERIFY, "--url", "http://127.0.0.1:9", "--api", "{api_list}"),
    cli("verify: --api-answer bogus", *VERIFY, "--url", "http://127.0.0.1:9", "--api-answer", "bogus"),
    cli("verify: --api with a model name", *VERIFY, "--url", "http://127.0.0.1:9", "--model-name", "m", "--api-answer", "label"),
    cli("verify: --api without --url", *VERIFY, "--suspect", "{model}", "--api-answer", "label"),
    # ------------------------------------------------------------------------------------------------- train
    cli("train: --data a folder that does not exist", *_replace(TRAIN, "--data", "{w}/nowhere")),
    cli("train: --data with train.npz/test.npz of zero images", *_replace(TRAIN, "--data", "{data_empty}")),
    cli("train: --data with npz files holding no arrays", *_replace(TRAIN, "--data", "{data_nothing}")),
    cli("train: --data with random bytes as npz files", *_replace(TRAIN, "--data", "{data_garbage}")),
    cli("train: --data without a labels array", *_replace(TRAIN, "--data", "{data_nolabels}")),
    cli("train: --data with 2-d images", *_replace(TRAIN, "--data", "{data_2d}")),
    cli("train: --data with 24 images and 5 labels", *_replace(TRAIN, "--data", "{data_mismatch}")),
    cli("train: --data with a NaN pixel", *_replace(TRAIN, "--data", "{data_nan}")),
    cli("train: --data with negative class labels", *_replace(TRAIN, "--data", "{data_negative}")),
    cli("train: --data with string labels", *_replace(TRAIN, "--data", "{data_strings}")),
    cli("train: --data with 4-channel images", *_replace(TRAIN, "--data", "{data_four}")),
    cli("train: --data medmnist: without a flag", *_replace(TRAIN, "--data", "medmnist:")),
    cli("train: --data medmnist:pathmnist@abc", *_replace(TRAIN, "--data", "medmnist:pathmnist@abc")),
    cli("train: --data medmnist:nosuchmnist (not on disk)", *_replace(TRAIN, "--data", "medmnist:nosuchmnist")),
    cli("train: --width 0", *TRAIN, "--width", "0"),
    cli("train: --width -3", *TRAIN, "--width", "-3"),
    cli("train: --width abc", *TRAIN, "--width", "abc"),
    cli("train: --lr nan", *TRAIN, "--lr", "nan"),
    cli("train: --lr inf", *TRAIN, "--lr", "inf"),
    cli("train: --lr 0", *TRAIN, "--lr", "0"),
    cli("train: --lr -0.1", *TRAIN, "--lr", "-0.1"),
    cli("train: --epochs -1", *TRAIN, "--epochs", "-1"),
    cli("train: --batch-size 0", *TRAIN, "--batch-size", "0"),
    cli("train: --device cuda on a machine without CUDA", *TRAIN, "--device", "cuda"),
    cli("train: --device cuda:7", *TRAIN, "--device", "cuda:7"),
    cli("train: --device bogus", *TRAIN, "--device", "bogus"),
    cli("train: --out an existing folder", *_replace(TRAIN, "--out", "{dir}")),
    cli("train: --out under a regular file", *_replace(TRAIN, "--out", "{file}/m.safetensors")),
    cli("train: --arch nosuch", *TRAIN, "--arch", "nosuch"),
    cli("train: --task regression on class labels", *TRAIN, "--task", "regression"),
    cli("train: --task nosuch", *TRAIN, "--task", "nosuch"),
    cli("train: --augment bogus", *TRAIN, "--augment", "bogus"),
    cli("train: --size 0", *TRAIN, "--size", "0"),
    cli("train: --channels 0", *TRAIN, "--channels", "0"),
    cli("train: --size 2 (below the crop augmentation's padding)", *TRAIN, "--size", "2"),
    cli("train: --arch vgg11_bn --size 8 (below its least input)", *TRAIN, "--arch", "vgg11_bn", "--size", "8", "--augment", ""),
    cli("train: --data with a zip signature and no npz inside", *_replace(TRAIN, "--data", "{data_zipsig}")),
    cli("train: --out /proc/x (checked before training)", *_replace(TRAIN, "--out", "/proc/x")),
    cli("train: --out a name longer than the file system allows", *_replace(TRAIN, "--out", "{w}/" + "n" * 300)),
    cli("train: --seed -1", *TRAIN, "--seed", "-1"),
    cli("train: --channels 2 for RGB data", *TRAIN, "--channels", "2"),
    cli("train: --embedding-dim 0", *TRAIN, "--embedding-dim", "0"),
    cli("train: an unknown option", *TRAIN, "--bogus", "1"),
    cli("train: no --out", "train", "--data", "{data}"),
    cli("an unknown command", "nosuch"),
    # ---------------------------------------------------------------------------------------------- generate
    cli("generate: --model that does not exist", *_replace(GEN, "--model", "{w}/none.safetensors")),
    cli("generate: --model a text file", *_replace(GEN, "--model", "{text}")),
    cli("generate: --model random bytes", *_replace(GEN, "--model", "{garbage}")),
    cli("generate: --model a fingerprint file", *_replace(GEN, "--model", "{fp}")),
    cli("generate: --model cut to a third", *_replace(GEN, "--model", "{model_cut}")),
    cli("generate: --model declaring width 600 with no weights", *_replace(GEN, "--model", "{bomb}")),
    cli("generate: --model with a NaN weight", *_replace(GEN, "--model", "{nan_model}")),
    cli("generate: --xi inf", *GEN, "--xi", "inf"),
    cli("generate: --xi nan", *GEN, "--xi", "nan"),
    cli("generate: --xi 0", *GEN, "--xi", "0"),
    cli("generate: --xi -1", *GEN, "--xi", "-1"),
    cli("generate: --n 0", *_replace(GEN, "--n", "0")),
    cli("generate: --lam -1", *GEN, "--lam", "-1"),
    cli("generate: --lam nan", *GEN, "--lam", "nan"),
    cli("generate: --tolerance -1", *GEN, "--tolerance", "-1"),
    cli("generate: --tolerance nan", *GEN, "--tolerance", "nan"),
    cli("generate: --norm l3", *GEN, "--norm", "l3"),
    cli("generate: --set xi_rms=0.1 with an L-inf ball", *GEN, "--set", "xi_rms=0.1"),
    cli("generate: --set xi_rms=-1", *GEN, "--norm", "l2", "--set", "xi_rms=-1"),
    cli("generate: --steps -1", *_replace(GEN, "--steps", "-1")),
    cli("generate: --pattern a;b", *GEN, "--pattern", "a;b"),
    cli("generate: --pattern 1,2,3", *GEN, "--pattern", "1,2,3"),
    cli("generate: --preset nosuch", *GEN, "--preset", "nosuch"),
    cli("generate: --out an existing folder", *_replace(GEN, "--out", "{dir}")),
    cli("generate: --out under a regular file", *_replace(GEN, "--out", "{file}/fp.safetensors")),
    cli("generate: --out /proc/x (checked before generating)", *_replace(GEN, "--out", "/proc/x")),
    cli("generate: --set pattern=[[0,0,0]]", *GEN, "--set", "pattern=[[0,0,0]]"),
    cli("generate: --set pattern=\"00\"", *GEN, "--set", 'pattern="00"'),
    cli("generate: --set black_box_settings=3", *GEN, "--set", "black_box_settings=3"),
    cli("generate: --data with a zip signature and no npz inside", *_replace(GEN, "--data", "{data_zipsig}")),
    cli("generate: --model a folder", *_replace(GEN, "--model", "{dir}")),
    cli("generate: --device cuda", *GEN, "--device", "cuda"),
    cli("generate: --task regression for a classifier", *GEN, "--task", "regression"),
    cli("generate: --scheme nosuch", *GEN, "--scheme", "nosuch"),
    cli("generate: --configuration nosuch", *GEN, "--configuration", "nosuch"),
    cli("generate: --scheme ipguard with a saliency setting", *GEN, "--scheme", "ipguard", "--xi", "0.1"),
    cli("generate: --set without =", *GEN, "--set", "beta"),
    cli("generate: --configuration owner without --owner-models", *GEN, "--configuration", "owner"),
    cli("generate: --owner-models a folder without a manifest", *GEN, "--configuration", "owner", "--owner-models", "{dir}"),
    cli("generate: --owner-models for a configuration that reads none", *GEN, "--owner-models", "{dir}"),
    cli("generate: --scheme conferae without --owner-models", *GEN, "--scheme", "conferae"),
    cli("owner-models: --scheme nosuch", "owner-models", "--target", "{model}", "--data", "{data}", "--out", "{w}/helpers", "--scheme", "nosuch"),
    cli("owner-models: a configuration that reads none", "owner-models", "--target", "{model}", "--data", "{data}", "--out", "{w}/helpers", "--configuration", "default"),
    cli("owner-models: --target that does not exist", "owner-models", "--target", "{w}/none.safetensors", "--data", "{data}", "--out", "{w}/helpers"),
    cli("owner-models: --out a regular file", "owner-models", "--target", "{model}", "--data", "{data}", "--out", "{file}"),
    cli("generate: --data with a NaN pixel", *_replace(GEN, "--data", "{data_nan}")),
    cli("generate: --data with 4-channel images", *_replace(GEN, "--data", "{data_four}")),
    cli("generate: --data with zero images", *_replace(GEN, "--data", "{data_empty}")),
    # ------------------------------------------------------------------------------------------------ verify
    cli("verify: --fingerprints that does not exist", "verify", "--fingerprints", "{w}/none.safetensors", "--suspect", "{model}"),
    cli("verify: --fingerprints a model file", "verify", "--fingerprints", "{model}", "--suspect", "{model}"),
    cli("verify: --fingerprints with one byte changed", "verify", "--fingerprints", "{fp_tampered}", "--suspect", "{model}"),
    cli("verify: --fingerprints cut in half", "verify", "--fingerprints", "{fp_cut}", "--suspect", "{model}"),
    cli("verify: --fingerprints random bytes", "verify", "--fingerprints", "{garbage}", "--suspect", "{model}"),
    cli("verify: --suspect that does not exist", *VERIFY, "--suspect", "{w}/none.safetensors"),
    cli("verify: --suspect random bytes", *VERIFY, "--suspect", "{garbage}"),
    cli("verify: --suspect declaring width 600", *VERIFY, "--suspect", "{bomb}"),
    cli("verify: --suspect with a NaN weight", *VERIFY, "--suspect", "{nan_model}", "--mode", "black-box"),
    cli("verify: --suspect for 16x16 images", *VERIFY, "--suspect", "{small}", "--mode", "black-box"),
    cli("verify: --suspect with 3 classes for a 10-class set, black-box", *VERIFY, "--suspect", "{three}", "--mode", "black-box"),
    cli("verify: neither --suspect nor --url", *VERIFY),
    cli("verify: both --suspect and --url", *VERIFY, "--suspect", "{model}", "--url", "http://127.0.0.1:9", "--model-name", "m"),
    cli("verify: --url without --model-name", *VERIFY, "--url", "http://127.0.0.1:9"),
    cli("verify: --url with --mode white-box", *VERIFY, "--url", "http://127.0.0.1:9", "--model-name", "m", "--mode", "white-box"),
    cli("verify: --url where nothing listens", *VERIFY, "--url", "http://127.0.0.1:9", "--model-name", "m", "--retries", "0", "--timeout", "2"),
    cli("verify: --url ftp://...", *VERIFY, "--url", "ftp://127.0.0.1:9", "--model-name", "m", "--retries", "0"),
    cli("verify: --url not a URL", *VERIFY, "--url", "::::", "--model-name", "m", "--retries", "0"),
    cli("verify: --budget -1", *VERIFY, "--suspect", "{model}", "--mode", "black-box", "--budget", "-1"),
    cli("verify: --budget smaller than the set needs", *VERIFY, "--suspect", "{model}", "--mode", "black-box", "--budget", "3"),
    cli("verify: --timeout 0", *VERIFY, "--url", "http://127.0.0.1:9", "--model-name", "m", "--timeout", "0"),
    cli("verify: --timeout nan", *VERIFY, "--url", "http://127.0.0.1:9", "--model-name", "m", "--timeout", "nan"),
    cli("verify: --rate-limit 0", *VERIFY, "--url", "http://127.0.0.1:9", "--model-name", "m", "--rate-limit", "0"),
    cli("verify: --alpha 0", *VERIFY, "--suspect", "{model}", "--alpha", "0"),
    cli("verify: --alpha 1.5", *VERIFY, "--suspect", "{model}", "--alpha", "1.5"),
    cli("verify: --alpha nan", *VERIFY, "--suspect", "{model}", "--alpha", "nan"),
    cli("verify: --batch-size 0", *VERIFY, "--suspect", "{model}", "--batch-size", "0"),
    cli("verify: --mode grey-box", *VERIFY, "--suspect", "{model}", "--mode", "grey-box"),
    cli("verify: --task regression for a classification set", *VERIFY, "--suspect", "{model}", "--task", "regression"),
    cli("verify: --device cuda", *VERIFY, "--suspect", "{model}", "--device", "cuda"),
    cli("verify: --records a regular file", "verify", "--fingerprints", "{fp}", "--suspect", "{model}", "--records", "{file}"),
    cli("verify: --record under a regular file", *VERIFY, "--suspect", "{model}", "--record", "{file}/r.json"),
    cli("verify: --journal under a regular file", *VERIFY, "--suspect", "{model}", "--mode", "black-box", "--journal", "{file}/j.jsonl"),
    cli("verify: --journal a folder", *VERIFY, "--suspect", "{model}", "--mode", "black-box", "--journal", "{dir}"),
    cli("verify: --journal whose line is {}", *VERIFY, "--suspect", "{model}", "--mode", "black-box", "--journal", "{journal_braces}"),
    cli("verify: --journal damaged in the middle", *VERIFY, "--suspect", "{model}", "--mode", "black-box", "--journal", "{journal_damaged}"),
    cli("verify: --null that does not exist", *VERIFY, "--suspect", "{model}", "--null", "{w}/none.json"),
    cli("verify: --null not JSON", *VERIFY, "--suspect", "{model}", "--null", "{null_text}"),
    cli("verify: --null an empty list", *VERIFY, "--suspect", "{model}", "--null", "{null_empty}"),
    cli("verify: --null a list of strings", *VERIFY, "--suspect", "{model}", "--null", "{null_strings}"),
    cli("verify: --null a safetensors file (binary)", *VERIFY, "--suspect", "{model}", "--null", "{model}"),
    cli("verify: --records under /proc", "verify", "--fingerprints", "{fp}", "--suspect", "{model}", "--records", "/proc/x/records"),
    cli("verify: --suspect a folder", *VERIFY, "--suspect", "{dir}"),
    cli("verify: --trusted-key that does not exist", *VERIFY, "--suspect", "{model}", "--trusted-key", "{w}/none.pub"),
    cli("verify: --trusted-key not a key", *VERIFY, "--suspect", "{model}", "--trusted-key", "{pub_garbage}"),
    cli("verify: --trusted-key for an unsigned set", *VERIFY, "--suspect", "{model}", "--trusted-key", "{owner_pub}"),
    cli("verify: --expect-sha256 of another set", *VERIFY, "--suspect", "{model}", "--expect-sha256", "0" * 64),
    cli("verify: --expect-sha256 not hex", *VERIFY, "--suspect", "{model}", "--expect-sha256", "xyz"),
    cli("verify: --target another model than the set names", *VERIFY, "--suspect", "{model}", "--target", "{other}"),
    cli("verify: --sign with a public key", *VERIFY, "--suspect", "{model}", "--sign", "{owner_pub}"),
    cli("generate: --sign a key that does not exist", *GEN, "--sign", "{w}/none.key"),
    # ------------------------------------------------------------------------------------------------ protect, check, scan
    cli("protect: an unknown profile", *PROTECT, "--new-key", "{w}/k1", "--profile", "bogus"),
    cli("protect: no key", *PROTECT),
    cli("protect: both --sign and --new-key", *PROTECT, "--sign", "{owner_key}", "--new-key", "{w}/k2"),
    cli("protect: --sign a public key", *PROTECT, "--sign", "{owner_pub}"),
    cli("protect: --new-key of an existing key", *PROTECT, "--new-key", "{w}/owner"),
    cli("protect: --null-models 0", *PROTECT, "--new-key", "{w}/k3", "--null-models", "0"),
    cli("protect: --null-models 100000", *PROTECT, "--new-key", "{w}/k4", "--null-models", "100000"),
    cli("protect: random bytes as the model", *_replace(PROTECT, "--model", "{garbage}"), "--new-key", "{w}/k5"),
    cli("protect: --out under a file", *_replace(PROTECT, "--out", "{file}/kit"), "--new-key", "{w}/k6"),
    cli("protect: --data that does not exist", *_replace(PROTECT, "--data", "{w}/nosuch"), "--new-key", "{w}/k7"),
    cli("protect: --schemes of an unknown scheme", *PROTECT, "--new-key", "{w}/k11", "--schemes", "ipguard,bogus"),
    cli("protect: --schemes of an unknown configuration", *PROTECT, "--new-key", "{w}/k12", "--schemes", "tafa:bogus"),
    cli("protect: --schemes naming a set twice", *PROTECT, "--new-key", "{w}/k13", "--schemes", "tafa,tafa:default"),
    cli("protect: --schemes ','", *PROTECT, "--new-key", "{w}/k14", "--schemes", ","),
    cli("protect: --set of a scheme the profile does not make", *PROTECT, "--new-key", "{w}/k8", "--set", "metav.steps=3"),
    cli("protect: --set without a scheme", *PROTECT, "--new-key", "{w}/k9", "--set", "steps=3"),
    cli("protect: --set of a setting the scheme does not have", *PROTECT, "--new-key", "{w}/k10", "--set", "ipguard.bogus=3"),
    cli("check: a folder without kit.json", "check", "--kit", "{dir}", "--suspect", "{model}", "--out", "{w}/c1"),
    cli("check: a kit.json that is not JSON", "check", "--kit", "{kit_garbage}", "--suspect", "{model}", "--out", "{w}/c2"),
    cli("check: an unsigned kit", "check", "--kit", "{kit_unsigned}", "--suspect", "{model}", "--out", "{w}/c3"),
    cli("check: --kit a file", "check", "--kit", "{file}", "--suspect", "{model}", "--out", "{w}/c4"),
    cli("check: neither --suspect nor --url", "check", "--kit", "{kit_unsigned}", "--out", "{w}/c5"),
    cli("check: random bytes as the suspect", "check", "--kit", "{kit_unsigned}", "--suspect", "{garbage}", "--out", "{w}/c6"),
    cli("check: --alpha 1.5", "check", "--kit", "{kit_unsigned}", "--suspect", "{model}", "--alpha", "1.5", "--out", "{w}/c7"),
    cli("check: --trusted-key not a key", "check", "--kit", "{kit_unsigned}", "--suspect", "{model}", "--trusted-key", "{pub_garbage}", "--out", "{w}/c8"),
    cli("scan: a folder without model files", "scan", "--kit", "{kit_unsigned}", "--suspects", "{suspects_empty}", "--out", "{w}/s1"),
    cli("scan: a list with a line that is not URL MODEL_NAME", "scan", "--kit", "{kit_unsigned}", "--suspects", "{text}", "--out", "{w}/s2"),
    cli("scan: an unsigned kit", "scan", "--kit", "{kit_unsigned}", "--suspects", "{suspects_one}", "--out", "{w}/s3"),
    cli("keys new: --out of an existing key", "keys", "new", "--out", "{w}/owner"),
    cli("keys new: --out under a regular file", "keys", "new", "--out", "{file}/k"),
    cli("records check: a record edited after signing", "records", "check", "{record_edited}", "--trusted-key", "{owner_pub}"),
    cli("records check: another owner's key", "records", "check", "{record}", "--trusted-key", "{stranger_pub}"),
    cli("records check: a record that does not exist", "records", "check", "{w}/none.json", "--trusted-key", "{owner_pub}"),
    cli("records check: a record that is not JSON", "records", "check", "{text}", "--trusted-key", "{owner_pub}"),
    cli("records check: --fingerprints for a record naming no set", "records", "check", "{record}", "--trusted-key", "{owner_pub}", "--fingerprints", "{fp}"),
    # ------------------------------------------------------------------------------------------------- serve
    cli("serve: --model that does not exist", *_replace(SERVE, "--model", "{w}/none.safetensors")),
    cli("serve: --model a fingerprint file", *_replace(SERVE, "--model", "{fp}")),
    cli("serve: --model declaring width 600", *_replace(SERVE, "--model", "{bomb}")),
    cli("serve: --max-body-mb -1", *SERVE, "--max-body-mb", "-1"),
    cli("serve: --max-body-mb nan", *SERVE, "--max-body-mb", "nan"),
    cli("serve: --port 70000", *_replace(SERVE, "--port", "70000")),
    cli("serve: --noise -1", *SERVE, "--noise", "-1"),
    cli("serve: --noise nan", *SERVE, "--noise", "nan"),
    cli("serve: --round -1", *SERVE, "--round", "-1"),
    cli("serve: --guard-data that does not exist", *SERVE, "--guard-data", "{w}/nowhere"),
    cli("serve: --guard-fpr 2", *SERVE, "--guard-data", "{data}", "--guard-fpr", "2"),
    cli("serve: --device cuda", *SERVE, "--device", "cuda"),
    # ---------------------------------------------------------------------------------------------- evaluate
    cli("evaluate: --out a regular file", *_replace(EVAL, "--out", "{file}")),
    cli("evaluate: --out under a regular file", *_replace(EVAL, "--out", "{file}/run")),
    cli("evaluate: --width 0", *EVAL, "--width", "0"),
    cli("evaluate: --zoo that does not exist", *EVAL, "--zoo", "{w}/none.yaml"),
    cli("evaluate: --zoo broken YAML", *EVAL, "--zoo", "{zoo_bad}"),
    cli("evaluate: --set bogus=1", *EVAL, "--set", "bogus=1"),
    cli("evaluate: --set xi=inf", *EVAL, "--set", "xi=Infinity"),
    cli("evaluate: --set n=abc", *EVAL, "--set", "n=abc"),
    cli("evaluate: --set without =", *EVAL, "--set", "xi"),
    cli("evaluate: --schemes nosuch", *EVAL, "--schemes", "nosuch"),
    cli("evaluate: --schemes saliency,saliency", *EVAL, "--schemes", "saliency,saliency"),
    cli("evaluate: --schemes ,", *EVAL, "--schemes", ","),
    cli("evaluate: --configuration nosuch", *EVAL, "--configuration", "nosuch"),
    cli("evaluate: --set n=5 (the run sets n)", *EVAL, "--set", "n=5"),
    cli("evaluate: --schemes ipguard with --references 2", *EVAL, "--schemes", "ipguard", "--references", "2"),
    cli("evaluate: --schemes ipguard for regression", *EVAL, "--schemes", "ipguard", "--task", "regression"),
    cli("evaluate: --data that does not exist", *_replace(EVAL, "--data", "{w}/nowhere")),
    cli("evaluate: --device cuda", *EVAL, "--device", "cuda"),
    cli("evaluate: --repeats 0", *EVAL, "--repeats", "0"),
    cli("evaluate: --target that does not exist", *EVAL, "--target", "{w}/none.safetensors"),
    cli("evaluate: --executor nosuch", *EVAL, "--executor", "nosuch"),
    cli("evaluate: --out /proc/x", *_replace(EVAL, "--out", "/proc/x")),
    cli("evaluate: --target random bytes", *EVAL, "--target", "{garbage}"),
    cli("evaluate: --zoo a binary file", *EVAL, "--zoo", "{garbage}"),
    cli("evaluate: --data with random bytes as npz files", *_replace(EVAL, "--data", "{data_garbage}")),
    cli("owner-models: --out /proc/x", "owner-models", "--target", "{model}", "--data", "{data}", "--out", "/proc/x"),
    cli("owner-models: --target random bytes", "owner-models", "--target", "{garbage}", "--data", "{data}", "--out", "{w}/helpers"),
    cli("training-zoo: --out /proc/x", "training-zoo", "--target", "{model}", "--data", "{data}", "--out", "/proc/x"),
    cli("training-zoo: --data that does not exist", "training-zoo", "--target", "{model}", "--data", "{w}/nowhere", "--out", "{w}/tz"),
    cli("watermark embed: --out /proc/x", "watermark", "embed", "--model", "{model}", "--data", "{data}", "--out", "/proc/x", "--key", "{w}/k.safetensors"),
    cli("watermark embed: --set bits=\"a\"", "watermark", "embed", "--model", "{model}", "--data", "{data}", "--out", "{w}/m.safetensors", "--key", "{w}/k.safetensors", "--set", 'bits="a"'),
    cli("watermark embed: --seed -1", "watermark", "embed", "--model", "{model}", "--data", "{data}", "--out", "{w}/m.safetensors", "--key", "{w}/k.safetensors", "--seed", "-1"),
    cli("watermark embed: an unknown backdoor mode", "watermark", "embed", "--model", "{model}", "--data", "{data}", "--out", "{w}/m.safetensors", "--key", "{w}/k.safetensors", "--scheme", "backdoor", "--configuration", "fixll_xyz"),
    cli("watermark embed: a NaN weight of a loss", "watermark", "embed", "--model", "{model}", "--data", "{data}", "--out", "{w}/m.safetensors", "--key", "{w}/k.safetensors", "--scheme", "backdoor", "--set", "pfl_weight=NaN"),
    cli("watermark embed: a chain longer than the data's classes", "watermark", "embed", "--model", "{model}", "--data", "{data}", "--out", "{w}/m.safetensors", "--key", "{w}/k.safetensors", "--scheme", "backdoor", "--set", "links=11"),
    cli("watermark embed: backdoor --plot without --model", "watermark", "embed", "--arch", "resnet18", "--data", "{data}", "--out", "{w}/m.safetensors", "--key", "{w}/k.safetensors", "--scheme", "backdoor", "--plot", "{w}/p.png"),
    cli("evaluate: --watermark with an unknown configuration", *EVAL, "--watermark", "backdoor:fixll_xyz"),
    cli("evaluate: --watermark backdoor twice", *EVAL, "--watermark", "backdoor,backdoor"),
    cli("watermark verify: --records under /proc", "watermark", "verify", "--key", "{fp}", "--suspect", "{model}", "--records", "/proc/x/r"),
    cli("keys new: --out under /proc", "keys", "new", "--out", "/proc/x/owner"),
    cli("records check: a record that is a binary file", "records", "check", "{garbage}", "--trusted-key", "{owner_pub}"),
    cli("serve: --model random bytes", *_replace(SERVE, "--model", "{garbage}")),
    cli("serve: --guard-data with a zip signature and no npz inside", *SERVE, "--guard-data", "{data_zipsig}"),
    cli("serve --watermark: a fingerprint set", *SERVE, "--watermark", "{fp}"),
    cli("serve --watermark: another model's key", *SERVE, "--watermark", "{csp_other}"),
    cli("serve --watermark: a key whose perturbation could change a top-1 (margin 1)", *SERVE, "--watermark", "{csp_margin}"),
    cli("serve --watermark: a usp key whose signs were halved", *SERVE, "--watermark", "{usp_sign}"),
    cli("watermark verify: a usp key whose lattice its map's features do not fit", "watermark", "verify", "--key", "{usp_grid}", "--suspect", "{model}"),
    cli("evaluate: a zoo spec whose API thief has a budget of 0", *EVAL, "--zoo", "{zoo_budget0}"),
    cli("evaluate: a zoo spec with an API thief for a regression target", *EVAL, "--zoo", "{zoo_thief}", "--task", "regression", "--schemes", "saliency"),
    cli("watermark embed: csp --set margin=1.5", "watermark", "embed", "--model", "{model}", "--data", "{data}", "--out", "{w}/m.safetensors", "--key", "{w}/k.safetensors", "--scheme", "csp", "--set", "margin=1.5"),
    cli("demo: --out /proc/x", "demo", "--out", "/proc/x"),
    cli("demo: --out a regular file", "demo", "--out", "{file}"),
    cli("demo: --epochs 0", "demo", "--out", "{w}/demo", "--epochs", "0"),
    cli("demo: --device cuda", "demo", "--out", "{w}/demo", "--device", "cuda"),
]


def _api_cases() -> list[Case]:
    from modelprint.access import BlackBox, WhiteBox
    from modelprint.data import check_images, load_data
    from modelprint.evidence.record import read_null_scores
    from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint
    from modelprint.journal import QueryJournal
    from modelprint.models import build_model, load_model
    from modelprint.serving.client import OipClient
    from modelprint.tasks import Classification
    from modelprint.train import TrainConfig
    from modelprint.evidence.verification import verify_suspect
    from modelprint.watermarks import CSP, Backdoor
    from modelprint.zoo import Extract

    def gen(ws, images, labels):
        SaliencyFingerprint(n=2, steps=1).generate(ws.model, images, labels)

    def box(ws, answer):
        return BlackBox(lambda x: answer(len(x)), input_shape=(3, 32, 32))

    def verify_box(ws, answer):
        SaliencyFingerprint().verify(box(ws, answer), ws.fingerprints, mode="black-box")

    good = torch.rand(4, 3, 32, 32)
    return [
        api("load_model of a missing file", lambda ws: load_model(ws.folder / "none.safetensors")),
        api("load_model of a text file", lambda ws: load_model(ws.paths["text"])),
        api("load_model of a width-600 bomb", lambda ws: load_model(ws.paths["bomb"])),
        api("load_model with a NaN weight", lambda ws: load_model(ws.paths["nan_model"])),
        api("FingerprintSet.load of a tampered set", lambda ws: FingerprintSet.load(ws.paths["fp_tampered"])),
        api("FingerprintSet.load of a model file", lambda ws: FingerprintSet.load(ws.paths["model"])),
        api("SaliencyFingerprint(xi=inf)", lambda ws: SaliencyFingerprint(xi=math.inf)),
        api("Backdoor().verify with a key of another scheme", lambda ws: Backdoor().verify(WhiteBox(ws.model), _other_scheme_key())),
        api("Backdoor(spl_weight=nan)", lambda ws: Backdoor(spl_weight=math.nan)),
        api("Backdoor().attach (a mark in the weights) to serve", lambda ws: Backdoor().attach(ws.model, _other_scheme_key())),
        api("Extract(budget=0)", lambda ws: Extract(budget=0)),
        api("CSP(margin=1.0)", lambda ws: CSP(margin=1.0)),
        api("CSP().verify with a key of another scheme", lambda ws: CSP().verify(WhiteBox(ws.model), _other_scheme_key())),
        api("SaliencyFingerprint(n=0)", lambda ws: SaliencyFingerprint(n=0)),
        api("SaliencyFingerprint(n='10')", lambda ws: SaliencyFingerprint(n="10")),
        api("SaliencyFingerprint(norm='l3')", lambda ws: SaliencyFingerprint(norm="l3")),
        api("SaliencyFingerprint(lam=nan)", lambda ws: SaliencyFingerprint(lam=math.nan)),
        api("SaliencyFingerprint.named('nosuch')", lambda ws: SaliencyFingerprint.named("nosuch")),
        api("TrainConfig(lr=nan)", lambda ws: TrainConfig(lr=math.nan)),
        api("TrainConfig(batch_size=0)", lambda ws: TrainConfig(batch_size=0)),
        api("build_model('nosuch')", lambda ws: build_model("nosuch", num_outputs=10)),
        api("build_model(width=0)", lambda ws: build_model("resnet18", num_outputs=10, width=0)),
        api("build_model(num_outputs=0)", lambda ws: build_model("resnet18", num_outputs=0)),
        api("generate on images with a NaN pixel", lambda ws: gen(ws, good.clone().index_fill_(0, torch.tensor([0]), math.nan), torch.zeros(4, dtype=torch.long))),
        api("generate on pixels above 1", lambda ws: gen(ws, good * 3, torch.zeros(4, dtype=torch.long))),
        api("generate on 3-d images", lambda ws: gen(ws, good[0], torch.zeros(4, dtype=torch.long))),
        api("generate with labels out of range", lambda ws: gen(ws, good, torch.full((4,), 12))),
        api("generate with fewer labels than images", lambda ws: gen(ws, good, torch.zeros(2, dtype=torch.long))),
        api("check_images on integer pixels", lambda ws: check_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))),
        api("BlackBox(budget=-1)", lambda ws: BlackBox(lambda x: x, budget=-1)),
        api("BlackBox(batch_size=0)", lambda ws: BlackBox(lambda x: x, batch_size=0)),
        api("BlackBox answering fewer outputs than images", lambda ws: verify_box(ws, lambda n: torch.full((max(n - 1, 0), 10), 0.1))),
        api("BlackBox answering NaN", lambda ws: verify_box(ws, lambda n: torch.full((n, 10), math.nan))),
        api("BlackBox answering 1e308", lambda ws: verify_box(ws, lambda n: torch.full((n, 10), 1e308, dtype=torch.float64))),
        api("BlackBox answering 3 classes for a 10-class set", lambda ws: verify_box(ws, lambda n: torch.full((n, 3), 1 / 3))),
        api("BlackBox answering images of another shape", lambda ws: box(ws, lambda n: torch.zeros(n, 10)).predict(torch.rand(2, 3, 16, 16))),
        api("white-box verification of a labels-only API", lambda ws: SaliencyFingerprint().verify(BlackBox(lambda x: x, labels_only=True), ws.fingerprints, mode="white-box")),
        api("verify with mode='grey-box'", lambda ws: SaliencyFingerprint().verify(WhiteBox(ws.model), ws.fingerprints, mode="grey-box")),
        api("load_data('nosuch')", lambda ws: load_data(str(ws.folder / "nosuch"))),
        api("load_data of random-byte npz files", lambda ws: load_data(ws.paths["data_garbage"])),
        api("load_data of zero images", lambda ws: load_data(ws.paths["data_empty"])),
        api("load_data of npz files with a zip signature and nothing else", lambda ws: load_data(ws.paths["data_zipsig"])),
        api("load_data(None)", lambda ws: load_data(None)),
        api("load_model(None)", lambda ws: load_model(None)),
        api("FingerprintSet.load(None)", lambda ws: FingerprintSet.load(None)),
        api("read_null_scores of a safetensors file", lambda ws: read_null_scores(ws.paths["model"], mode="black-box", fingerprints_sha256="0")),
        api("SaliencyFingerprint(pattern=[(0,)])", lambda ws: SaliencyFingerprint(pattern=[(0,)])),
        api("SaliencyFingerprint(pattern='00')", lambda ws: SaliencyFingerprint(pattern="00")),
        api("SaliencyFingerprint(black_box_settings='xi')", lambda ws: SaliencyFingerprint(black_box_settings="xi")),
        api("SaliencyFingerprint(seed=-1)", lambda ws: SaliencyFingerprint(seed=-1)),
        api("generate with labels as a Python list", lambda ws: SaliencyFingerprint(n=2, steps=1).generate(ws.model, good, [0, 1, 2, 3])),
        api("generate with images as a NumPy array", lambda ws: SaliencyFingerprint(n=2, steps=1).generate(ws.model, good.numpy(), torch.zeros(4, dtype=torch.long))),
        api("generate with a model file path for the model", lambda ws: SaliencyFingerprint(n=2, steps=1).generate(ws.paths["model"], good, torch.zeros(4, dtype=torch.long))),
        api("verify with a bare nn.Module for the access", lambda ws: SaliencyFingerprint().verify(ws.model, ws.fingerprints)),
        api("verify with a path for the fingerprint set", lambda ws: SaliencyFingerprint().verify(WhiteBox(ws.model), ws.paths["fp"])),
        api("build_model('vgg11_bn', input_size=8)", lambda ws: build_model("vgg11_bn", num_outputs=10, input_size=8)),
        api("OipClient(retries=-1)", lambda ws: OipClient("http://127.0.0.1:9", "m", retries=-1)),
        api("OipClient where nothing listens", lambda ws: OipClient("http://127.0.0.1:9", "m", retries=0, timeout=2)),
        api("read_null_scores of a text file", lambda ws: read_null_scores(ws.paths["null_text"], mode="black-box", fingerprints_sha256="0")),
        api("QueryJournal of a damaged file", lambda ws: QueryJournal(ws.paths["journal_damaged"])),
        api("QueryJournal whose line is {}", lambda ws: QueryJournal(ws.paths["journal_braces"])),
        api("verify_suspect with neither suspect nor URL", lambda ws: verify_suspect(ws.paths["fp"], records=ws.folder / "records")),
        api("verify_suspect with records a regular file", lambda ws: verify_suspect(ws.paths["fp"], suspect=ws.paths["model"], records=ws.paths["file"])),
        api("Classification task with a similarity set", lambda ws: Classification().check_labels(torch.tensor([0.5]), None) if hasattr(Classification, "check_labels") else verify_suspect(ws.paths["fp"], suspect=ws.paths["model"], task="similarity", records=ws.folder / "records")),
    ]


CASES += _api_cases()
