"""relrec.content"""
