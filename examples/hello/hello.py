class Hello:
    def hello(self, request):
        return "Hello, World!"
