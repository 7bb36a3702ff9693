"""Measuring retrieval: metrics, the digits world, standard dataset adapters, the benchmark and the demo.

    query/eval/metrics.py    R@k, mAP, zero-shot accuracy
    query/eval/digits.py     the digits world: real spoken and written digits, rendered depth/thermal
    query/eval/datasets/     adapters for ESC-50, NYU-Depth v2, SUN RGB-D, LLVIP, AudioCaps, Clotho
    query/eval/bench.py      `ebridge bench`: train the variants, index, route, report
    query/eval/demo.py       `ebridge demo`
"""
