"""The Python API with your own objects: a module, a folder of images, an algorithm factory.

    python train_python.py IMAGES_ROOT WORKDIR
"""
import json
import sys

import metajax
from metajax.data import load_folder
from my_model import SmallNet

root, workdir = sys.argv[1], sys.argv[2]
cfg = metajax.Config(dataset="folder", ways=3, shots=1, query=2, meta_batch=4, inner_lr=0.1,
                     steps=10, eval_every=10, eval_tasks=8, eval_batch=4, log_every=5,
                     checkpoint_every=10, eval_inner_steps=3)
splits = load_folder(root, image_size=16)  # {"train", "val", "test"}, classes of any size
mine = dict(model=SmallNet(cfg.ways), data=splits, learner=metajax.anil)
metajax.train_and_evaluate(cfg, workdir, progress=False, **mine)
print(json.dumps(metajax.evaluate_run(workdir, tasks=8, **mine)))
