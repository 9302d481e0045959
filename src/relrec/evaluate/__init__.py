"""relrec.evaluate"""
