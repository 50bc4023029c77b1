"""Building images (issue 12): the build context and what a build makes of a Dockerfile.

Above the runtime wing (a RUN step is a container) and the images wing (the layers and
configs it writes); below the command line.
"""
