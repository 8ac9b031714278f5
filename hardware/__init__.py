"""The Pi's devices behind small interfaces, each with a simulator in ``hardware.sim``.

Get devices from a factory (``CUSTODY_HW=pi|sim``, ``CUSTODY_BOARD=name|path``)::

    from hardware.factory import get_factory
    hw = get_factory()
    camera, mic = hw.camera(officer_id="4711"), hw.microphone()
    controls, indicators = hw.controls(), hw.indicators()
    battery, storage, clock = hw.battery(), hw.storage(), hw.clock()

Modules: ``board`` (TOML board files), ``camera``/``picamera`` (H.264 frames),
``microphone`` (PCM blocks), ``speaker``, ``controls``, ``indicators``,
``battery``, ``storage``, ``clock``, ``serialport``, ``capture`` (camera +
microphone into an MP4), ``frames`` (the data types), ``overlay`` (burned-in text).
Importing this package imports none of the device libraries.
"""
