//! The customs-style record (NERSC's `customs`, SciPy 2021, Table 1) and its mapping to and
//! from this project's record.
