#!/usr/bin/env bash
# Seed 000 Table 3, MNIST column (VGG4, self-augmentation): ours (reverse CE), collision CE,
# IMSAT (mi-gd) and IIC on the same network, data and seeds, with the seeds' settings (appendix
# E.3: Adam 1e-4, batch 250, 50 epochs, two augmentations per image, lambda 100, 6 runs with the
# same initialisation for every method in a run). Papers: ours 93.58 +- 4.8, CCE 95.11 +- 4.3,
# IMSAT 92.90, IIC 82.51. GPU work: one VGG4 step at batch 250 costs about 10 s on 2 CPU cores.
#   bash benchmarks/deep_mnist_table3.sh MNIST_ROOT [--device cpu] [--seeds 3]
# MNIST_ROOT holds the IDX files (train-images-idx3-ubyte[.gz], ...), as entclust.images.load_mnist reads them.
set -euo pipefail
root=${1:?usage: deep_mnist_table3.sh MNIST_ROOT [extra compare-deep options]}
shift
cd "$(dirname "$0")/.."
${PYTHON:-python3} -m entclust compare-deep "mnist:$root" --name mnist --methods rce,cce,mi-gd,iic --seeds 6 \
  --lr 1e-4 --batch-size 250 --epochs 50 --views 2 --width 1 --device cuda --out "${OUT:-results}" "$@"
