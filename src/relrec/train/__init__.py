"""relrec.train"""
