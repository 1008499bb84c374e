"""Sequential recommenders (SASRec, GRU4Rec, Caser) distilled from a recommender teacher (DLLM2Rec)."""
