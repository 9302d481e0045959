"""relrec.rerank"""
