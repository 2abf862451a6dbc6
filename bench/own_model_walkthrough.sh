#!/usr/bin/env bash
# The walk-through of docs/own-model.md, as it ran: an owner's timm, torchvision and ONNX model, imported,
# fingerprinted (saliency default, IPGuard, MetaV), and a fine-tuned copy and an independent model verified in
# both modes. Prints one RESULT line per verification (a JSON summary). Needs the shared CIFAR-10 npz folder.
#
#     bash bench/own_model_walkthrough.sh /work/shared/data/cifar10_test_32 runs/own
set -euo pipefail
CIFAR=$(realpath "$1"); mkdir -p "$2"; cd "$2"
E=$(dirname "$(realpath "$0")")/../examples/train_classifier.py
python - "$CIFAR" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
train, test = (np.load(f"{sys.argv[1]}/{s}.npz") for s in ("train", "test"))
names = [str(c) for c in train["class_names"]]
def write(root, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = Path(root) / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
write("pets/train", train["images"][:3000], train["labels"][:3000]); write("pets/test", test["images"][:1000], test["labels"][:1000])
write("thief/train", train["images"][3000:], train["labels"][3000:]); write("thief/test", test["images"][1000:], test["labels"][1000:])
PY
for arch in timm:resnet18 torchvision:resnet18; do
  p=${arch%%:*}; p=${p/torchvision/tv}
  python $E --data pets --arch $arch --size 64 --epochs 8 --seed 0 --out $p-owner.pt $([ $p = timm ] && echo --onnx owner.onnx)
  python $E --data thief --arch $arch --size 64 --epochs 2 --lr 0.01 --seed 5 --init $p-owner.pt --out $p-stolen.pt
  python $E --data thief --arch $arch --size 64 --epochs 8 --seed 7 --out $p-independent.pt
  for s in stolen independent; do modelprint import $p-$s.pt --arch $arch --input-size 64 --out $p-$s.safetensors; done
done
cp timm-stolen.safetensors onnx-stolen.safetensors; cp timm-independent.safetensors onnx-independent.safetensors
walk() {  # PREFIX IMPORT-ARGUMENTS...
  local P=$1; shift
  modelprint import "$@" --class-names @timm-owner.classes.txt --out $P-target.safetensors
  modelprint generate --model $P-target.safetensors --data pets --scheme saliency --out $P-fp-saliency.safetensors
  modelprint generate --model $P-target.safetensors --data pets --scheme ipguard --out $P-fp-ipguard.safetensors
  modelprint training-zoo --target $P-target.safetensors --data pets --size 8 --epochs 8 --out $P-tz
  modelprint generate --model $P-target.safetensors --data pets --scheme metav --training-zoo $P-tz --set training_models=8 --set steps=100 --out $P-fp-metav.safetensors
  for fp in saliency ipguard metav; do for s in stolen independent; do for mode in white-box black-box; do
    echo "RESULT $P $fp $s $mode $(modelprint verify --fingerprints $P-fp-$fp.safetensors --suspect $P-$s.safetensors --mode $mode --records records-$P --json)"
  done; done; done
}
walk timm timm-owner.pt --arch timm:resnet18 --input-size 64
walk tv tv-owner.pt --arch torchvision:resnet18 --input-size 64
walk onnx owner.onnx --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
