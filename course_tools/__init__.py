"""The course's own machinery: what runs, checks, renders and packages the course. No notebook imports it.

    runner    execute one notebook with papermill in the course kernel (time, peak memory, failures)   make test / course
    course    execute every chapter in full mode and write build/course/index.html                     make course
    site      the executed course as a static site (Sphinx + MyST-NB)                                    make site
    student   the learner's copy: solution cells replaced by stubs                                      make student
    nbclean   strip outputs and run metadata from notebooks                                             make strip
    doctor    check a machine against what the course needs, before setup too                           make doctor
    kernel_startup  run by the course's kernel as it starts (PYTHONSTARTUP): helpers.quiet          make setup

It imports `helpers` (the library the notebooks use), never the reverse: `lint-imports` checks that.
"""

# The Jupyter kernel `make setup` registers and every notebook runs in. The Makefile reads these two lines.
KERNEL = "deploy-dl-course"
KERNEL_DISPLAY = "Python 3 (deploy-dl course)"
