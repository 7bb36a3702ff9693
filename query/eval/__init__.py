"""Measuring retrieval: metrics, the digits world, standard dataset adapters, the benchmark and the demo.

    query/eval/metrics.py    qrels-shaped R@k, mAP, MRR@10, nDCG@10, zero-shot top-k, in corpus chunks
    query/eval/digits.py     the digits world: real spoken and written digits, rendered depth/thermal
    query/eval/datasets/     adapters for ESC-50, NYU-Depth v2, SUN RGB-D, LLVIP, AudioCaps, Clotho
    query/eval/tasks.py      what each dataset measures (roles, paired pairs, relevance) and its world folder
    query/eval/bench.py      `ebridge bench`: the run as named steps (train, index, route, report) and its CLI
    query/eval/selection.py  what validation chooses: variants, the swept setting, the route table
    query/eval/evaluate.py   an index scored pair by pair through the router; the raw baseline; latency
    query/eval/aggregate.py  the figures over seeds, against `anchor` and `oracle`
    query/eval/report.py     report.md, report.json and the plots
    query/eval/demo.py       `ebridge demo`
"""
