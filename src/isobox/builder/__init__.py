"""Building images (issue 12): the build context and what a build makes of a Dockerfile.
Named `builder`, not `build`: a wing must not shadow a public name (`Image.build`).

Above the runtime wing (a RUN step is a container) and the images wing (the layers and
configs it writes); below the command line.
"""
