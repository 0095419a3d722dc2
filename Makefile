# The two commands of the README's Quick start, plus the benchmarks. Each creates .venv as needed.
.PHONY: demo test bench clean

demo:
	@tools/ensure-venv.sh demo
	.venv/bin/python examples/run_notebook.py examples/quickstart.ipynb

test:
	@tools/ensure-venv.sh test,demo
	tools/test.sh

bench:
	@tools/ensure-venv.sh test,bench
	.venv/bin/python bench/run.py

clean:
	rm -rf .venv build dist *.egg-info
