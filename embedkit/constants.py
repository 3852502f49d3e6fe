"""Choice lists shared by the library, the CLI and the service: written once, here.

Imports nothing, so ``embedkit --help`` can build its option lists without loading torch or faiss."""

POOLINGS = ("model", "cls", "pooler", "last-avg", "first-last-avg")
# encoder runtimes (--backend); their classes are in embedkit.runtimes (a lazy name -> "module:Class" map)
RUNTIMES = ("torch", "onnx", "onnx-int8", "onnx-int8-static", "openvino", "openvino-int8")
DEFAULT_RUNTIME = "torch"
INDEX_TYPES = ("flat", "hnsw", "ivf-flat", "ivf-pq")  # FAISS presets; a factory string is accepted too
MILVUS_INDEX_TYPES = ("flat", "ivf-flat", "hnsw", "autoindex")
METRICS = ("cosine", "ip", "l2")
SEARCH_MODES = ("dense", "lexical", "hybrid")  # dense vectors, Chinese BM25, or both fused
CORPUS_FORMATS = ("txt", "jsonl", "tsv")
REDUCER_KINDS = ("none", "whitening", "pca", "jl", "auto")
ENGINES = ("local", "ray")
EVAL_PROTOCOLS = ("paper", "fit-train", "fit-valid")
TEXT_NORMALIZATIONS = ("none", "nfkc", "t2s", "s2t")  # query-path text normalisation (--normalize)

REDUCE_HELP = "none | whitening:K[:beta=B,gamma=G] | pca:K | jl:K | jl:auto | auto[:K]"
INDEX_HELP = (f"{' | '.join(INDEX_TYPES)}, or a FAISS factory string (e.g. 'IVF256,PQ32'); "
              f"milvus[:{'|'.join(MILVUS_INDEX_TYPES)}] for a Milvus collection (see --milvus-uri).")
