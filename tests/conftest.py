import os
import sys

# Tests import the packages from the checkout, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The `pubsub_emulator` fixture, for every test module that asks for it.
pytest_plugins = ['tests.pubsub_emulator']
