// Microphone capture for the voicebot page: hands 128-sample blocks of the (16 kHz) input to the page.
class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0]) this.port.postMessage(input[0].slice(0));
    return true;
  }
}
registerProcessor("voicebot-capture", CaptureProcessor);
