"""Compiled programs kept between runs, and the key that names each one."""
