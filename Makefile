# Thin wrappers around tasks.py, which needs nothing but Python >= 3.10 and pip.
PYTHON ?= python3

.PHONY: lab test bench setup student book app clean
lab:    ; $(PYTHON) tasks.py lab
test:   ; $(PYTHON) tasks.py test
bench:  ; $(PYTHON) tasks.py bench
setup:  ; $(PYTHON) tasks.py setup
student: ; $(PYTHON) tasks.py student
book:   ; $(PYTHON) tasks.py book
app:    ; $(PYTHON) tasks.py app $(NAME)   # make app NAME=05_2
clean:  ; rm -rf .venv .pytest_cache build *.egg-info
