"""relrec.data"""
