"""relrec.index"""
