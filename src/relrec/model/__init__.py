"""relrec.model"""
