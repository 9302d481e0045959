"""relrec.serve"""
