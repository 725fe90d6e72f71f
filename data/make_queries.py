"""Generate data/queries.txt: a search-style query log with realistic repetition.

Distinct queries come from templates x topics; the log draws them with Zipf(1.0)-like
popularity (a few head queries repeat hundreds of times, a long tail appears once), the
shape of real query logs. Deterministic (fixed seed). Run: python data/make_queries.py
"""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = [
    "machine learning", "deep learning", "vector databases", "embeddings", "transformers",
    "gradient descent", "overfitting", "cross validation", "random forests", "k-means",
    "word2vec", "attention", "tokenization", "fine-tuning", "transfer learning",
    "reinforcement learning", "convolutional networks", "recurrent networks", "LSTMs",
    "batch normalization", "dropout", "learning rate schedules", "Adam optimizer",
    "cosine similarity", "approximate nearest neighbour search", "HNSW", "product quantization",
    "BM25", "hybrid search", "reranking", "retrieval augmented generation", "prompt engineering",
    "knowledge graphs", "named entity recognition", "sentiment analysis", "topic modeling",
    "time series forecasting", "anomaly detection", "recommendation systems", "A/B testing",
    "feature stores", "data drift", "model monitoring", "quantization", "distillation",
    "pruning", "mixed precision", "GPU memory", "LMDB", "Redis", "caching", "sharding",
    "replication", "consistent hashing", "bloom filters", "count-min sketch", "LRU caches",
    "Python generators", "asyncio", "multiprocessing", "numpy broadcasting", "pandas groupby",
    "SQL joins", "indexes in PostgreSQL", "Kubernetes autoscaling", "Docker images",
    "CI pipelines", "unit testing", "property-based testing", "type hints", "profiling Python",
    "memory leaks", "garbage collection", "Unicode normalization", "regular expressions",
]
TEMPLATES = [
    "What is {t}?", "what is {t}", "How does {t} work?", "{t} explained",
    "{t} tutorial", "best practices for {t}", "{t} vs {u}", "when to use {t}",
    "how to debug {t}", "{t} in production", "examples of {t}", "is {t} still relevant",
    "{t} interview questions", "common mistakes with {t}", "{t} for beginners",
    "how to speed up {t}", "{t} python library", "difference between {t} and {u}",
]


def main(n_lines: int = 6000, seed: int = 7) -> None:
    rng = random.Random(seed)
    distinct: list[str] = []
    for t in TOPICS:
        for tpl in TEMPLATES:
            u = rng.choice([x for x in TOPICS if x != t])
            distinct.append(tpl.format(t=t, u=u))
    rng.shuffle(distinct)
    weights = [1.0 / (rank + 1) for rank in range(len(distinct))]
    lines = rng.choices(distinct, weights=weights, k=n_lines)
    out = Path(__file__).with_name("queries.txt")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} lines ({len(set(lines))} distinct) to {out}")


if __name__ == "__main__":
    main()
